//! The inspection seam: the one place every statement and every result row passes through.
//!
//! The PostgreSQL session hands each Query, Parse, Bind, Execute, FunctionCall, Close and Sync
//! to the session's [`Inspector`] before forwarding it, and the inspector's [`Verdict`] decides
//! whether it goes on; RowDescription and DataRow are shown on the way back, and so are the
//! replies (ErrorResponse, ReadyForQuery) that say what the database made of the statements.
//! Classification, policy, approvals, masking and audit plug in here. An inspector states its
//! [`Interest`] once per session, so with nothing plugged in the relay does no extra work
//! beyond the framing it needs anyway.

use std::net::SocketAddr;

use crate::protocol::mysql::command::Command;
use crate::protocol::pg::frontend::FrontendMessage;

/// Who is on the other end of a session, as far as Airlock knows after authentication.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Airlock's own id for the session (also the pid in its BackendKeyData).
    pub id: i32,
    pub user: String,
    pub database: String,
    pub application_name: Option<String>,
    pub client_addr: SocketAddr,
    pub tls: bool,
    /// Whether the database reads string literals as Airlock's classifier does at the start of
    /// the session: PostgreSQL with standard_conforming_strings on (backslashes are ordinary),
    /// MySQL without NO_BACKSLASH_ESCAPES (backslashes escape).
    pub strings_as_classified: bool,
    /// MySQL: the session's sql_mode at login makes `"..."` a quoted name (ANSI_QUOTES), in
    /// which a backslash escapes nothing: text holding a backslash is judged unknown for the
    /// whole session. Always false for PostgreSQL.
    pub quotes_as_names: bool,
    /// Whether the client's character set may end a multibyte character in an ASCII byte
    /// (see [`crate::sql::encoding`]): text with any byte past ASCII is then judged unknown.
    pub ascii_only: bool,
    /// Whether the session may send the database a file of the client's own (MySQL's LOAD DATA
    /// LOCAL INFILE, when `mysql.allow_local_infile` says so). Always false for PostgreSQL,
    /// whose COPY FROM STDIN is a statement like any other.
    pub local_infile: bool,
}

/// What an inspector wants to be shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    /// Query, Parse, Bind, Execute and FunctionCall from the client.
    pub statements: bool,
    /// Results: every message from the database, each held whole (through
    /// [`Inspector::backend`], which may rewrite it), and Describe from the client.
    pub rows: bool,
    /// ErrorResponse and ReadyForQuery (their tags, through [`Inspector::reply`]) and
    /// ParameterStatus (through [`Inspector::backend`]) from the database.
    pub replies: bool,
    /// How statements end: CommandComplete, ErrorResponse, EmptyQueryResponse and
    /// PortalSuspended bodies (through [`Inspector::backend`]).
    pub outcomes: bool,
    /// Statements are recorded: before forwarding what it showed the inspector, the relay
    /// asks [`Inspector::pending_records`] whether their records are durable.
    pub records: bool,
}

/// What happens to a message the inspector was shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// The message does not reach the database; the client gets this error in its place.
    Deny(Denial),
    /// The message waits, in the session, for an approver's decision (see
    /// [`crate::approval`]); where nothing can hold it, the client gets `refusal`.
    Hold(Box<Hold>),
}

/// A statement to hold: the ticket to open, and the refusal for a listener without an
/// approvals store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub request: crate::approval::ticket::Request,
    pub refusal: Denial,
}

/// What becomes of a message (or packet) from the database that an inspector was shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    Keep,
    /// The client gets this body (or payload) instead.
    Replace(Vec<u8>),
    /// The message must not reach the client and cannot be made fit: the session ends,
    /// telling the client this reason.
    Refuse(String),
}

impl Rewrite {
    /// `Replace` with `Some` body, `Keep` with `None`.
    pub fn from_body(body: Option<Vec<u8>>) -> Rewrite {
        body.map_or(Rewrite::Keep, Rewrite::Replace)
    }
}

/// Why a statement was refused, in words for the client. Protocol-neutral: each listener
/// turns it into its own error (PostgreSQL 42501, MySQL 1142).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// A per-session observer of the traffic. Methods must not block: they run on the relay path.
pub trait Inspector: Send {
    fn interest(&self) -> Interest;

    /// A statement-carrying message from the client, already checked to be well formed.
    fn frontend(&mut self, _message: &FrontendMessage<'_>) -> Verdict {
        Verdict::Forward
    }

    /// A message body from the database: with `rows`, every one; with `replies`, each
    /// ParameterStatus; with `outcomes`, each CommandComplete, ErrorResponse,
    /// EmptyQueryResponse and PortalSuspended. The client gets what the answer says.
    fn backend(&mut self, _tag: u8, _body: &[u8]) -> Rewrite {
        Rewrite::Keep
    }

    /// The ErrorResponse about to be shown answers a substitute Airlock sent for a statement
    /// it refused (the client gets Airlock's own error): that statement did not run.
    fn substituted(&mut self) {}

    /// Whether the audit records of the messages shown since the last call are durable
    /// (`audit = "required"`): the relay forwards those messages only if they are.
    fn pending_records(&mut self) -> crate::audit::Ack {
        Ok(())
    }

    /// An ErrorResponse (`b'E'`, `status` None) or ReadyForQuery (`b'Z'`, with its
    /// transaction status: `I`, `T` or `E`) from the database.
    fn reply(&mut self, _tag: u8, _status: Option<u8>) {}
}

/// Makes one inspector per session.
pub trait InspectorFactory: Send + Sync {
    fn for_session(&self, session: &SessionInfo) -> Box<dyn Inspector>;

    /// Whether the session settings a client asks for at start-up (name and value) may reach
    /// the database, before it connects; `user` has authenticated for `database`.
    fn admit(
        &self,
        _user: &str,
        _database: &str,
        _settings: &[(String, String)],
    ) -> Result<(), Denial> {
        Ok(())
    }
}

/// Nothing plugged in.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInspection;

impl Inspector for NoInspection {
    fn interest(&self) -> Interest {
        Interest::default()
    }
}

impl InspectorFactory for NoInspection {
    fn for_session(&self, _session: &SessionInfo) -> Box<dyn Inspector> {
        Box::new(NoInspection)
    }
}

/// The MySQL listener's side of the seam: each command before it is forwarded; from the
/// answers, the id the server gave each prepared statement, the status flags, and (when asked)
/// column definitions and rows.
pub trait MysqlInspector: Send {
    /// A command from the client, already read whole.
    fn command(&mut self, command: &Command<'_>) -> Verdict;

    /// The server answered the last COM_STMT_PREPARE: `Some(id)` if it accepted it. (`None`
    /// also follows any refused command.)
    /// The server's answer to the last COM_STMT_PREPARE: the statement's id and parameter
    /// count, or `None` if it refused.
    fn prepared(&mut self, _statement: Option<(u32, u16)>) {}

    /// The server status flags of an OK or EOF; `None` when Airlock lost track of the answers.
    fn status(&mut self, _flags: Option<u16>) {}

    /// Whether to be shown column definitions and result rows (each held whole, up to
    /// `max_packet_size`; a larger one closes the session rather than pass unread).
    fn wants_rows(&self) -> bool {
        false
    }

    /// As [`Inspector::pending_records`].
    fn pending_records(&mut self) -> crate::audit::Ack {
        Ok(())
    }

    /// The command last shown was forwarded (with `answer`: the database owes an answer,
    /// reported later through [`MysqlInspector::answered`]).
    fn forwarded(&mut self, _answer: bool) {}

    /// The command last shown was not forwarded: the client got Airlock's error `errno`.
    fn refused(&mut self, _errno: u16) {}

    /// The database finished answering a forwarded command: `rows` returned (result sets)
    /// or affected (an OK), or the error number.
    fn answered(&mut self, _rows: Option<u64>, _error: Option<u16>) {}

    /// A result set starts: its column definitions follow.
    fn columns(&mut self) {}

    /// A column (or parameter) definition from the server.
    fn definition(&mut self, _payload: &[u8]) {}

    /// A result row: in the binary protocol (answers to COM_STMT_EXECUTE and FETCH) or the
    /// text one.
    fn row(&mut self, _binary: bool, _payload: &[u8]) -> Rewrite {
        Rewrite::Keep
    }

    /// An ERR packet from the server (with `wants_rows`, whole).
    fn error(&mut self, _payload: &[u8]) -> Rewrite {
        Rewrite::Keep
    }
}

/// Makes one MySQL inspector per session.
pub trait MysqlInspectorFactory: Send + Sync {
    fn for_session(&self, session: &SessionInfo) -> Box<dyn MysqlInspector>;
}

impl MysqlInspector for NoInspection {
    fn command(&mut self, _command: &Command<'_>) -> Verdict {
        Verdict::Forward
    }
}

impl MysqlInspectorFactory for NoInspection {
    fn for_session(&self, _session: &SessionInfo) -> Box<dyn MysqlInspector> {
        Box::new(NoInspection)
    }
}
