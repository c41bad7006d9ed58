//! The guard for a MySQL session: a COM_QUERY is judged as it arrives; a COM_STMT_PREPARE is
//! classified once, remembered under the id the server gives it, and judged at every
//! COM_STMT_EXECUTE. Administrative commands that carry no SQL (shutdown, refresh, kill,
//! debug) are judged as admin statements.

use std::collections::HashMap;
use std::sync::Arc;

use super::audit::{Ends, SessionAudit};
use super::prepared_sql::SqlPrepared;
use super::{Guard, Judged, TextSession, TextState, Who, judge, judge_one, judge_text};
use crate::audit::Ack;
use crate::inspect::{
    Denial, MysqlInspector, MysqlInspectorFactory, Rewrite, SessionInfo, Verdict,
};
use crate::mask::mysql::MyResults;
use crate::protocol::mysql::command::{self, Command};
use crate::protocol::mysql::response::SERVER_STATUS_NO_BACKSLASH_ESCAPES;
use crate::sql::classify::{Classified, Kind};

/// Prepared statements remembered per session; past this, new ones are judged unknown.
const MAX_STATEMENTS: usize = 10_000;

/// Makes a [`MyGuard`] for each session of a listener, all sharing one [`Guard`].
#[derive(Clone)]
pub struct MyGuards(pub Arc<Guard>);

impl MysqlInspectorFactory for MyGuards {
    fn for_session(&self, session: &SessionInfo) -> Box<dyn MysqlInspector> {
        let who = self.0.who(session);
        let text = self.0.text_state(&who);
        let results = self.0.masking_for(&who).map(MyResults::new);
        let audit = SessionAudit::start(&self.0, &who, session, results.is_some());
        // Sampling rows for the trail needs the column definitions even where masking
        // does not apply.
        let sampler = (results.is_none() && audit.as_ref().is_some_and(SessionAudit::wants_rows))
            .then(|| MyResults::new(self.0.masking()));
        Box::new(MyGuard {
            audit,
            sampler,
            guard: self.0.clone(),
            results,
            who,
            statements: HashMap::new(),
            preparing: None,
            preparing_text: None,
            staged: false,
            switching: None,
            owed: std::collections::VecDeque::new(),
            sql_prepared: SqlPrepared::default(),
            text,
            strings_as_classified: session.strings_as_classified,
            quotes_as_names: session.quotes_as_names,
            ascii_only: session.ascii_only,
            local_infile: session.local_infile,
        })
    }
}

/// One session's guard.
pub struct MyGuard {
    guard: Arc<Guard>,
    who: Who,
    /// Prepared statements by the server's id.
    statements: HashMap<u32, Statement>,
    /// The statement of the COM_STMT_PREPARE awaiting the server's answer.
    preparing: Option<Arc<Judged>>,
    /// Its text as sent, when the session is audited.
    preparing_text: Option<Arc<str>>,
    text: TextState,
    /// Whether the server reads backslashes in strings as escapes, as the classifier does
    /// (false once a status says NO_BACKSLASH_ESCAPES, or when Airlock lost track): text
    /// with a backslash is then judged unknown.
    strings_as_classified: bool,
    /// `"..."` may be a quoted name in which a backslash escapes nothing (ANSI_QUOTES in the
    /// session's sql_mode at login, or a SET of sql_mode let through since): text with a
    /// backslash is judged unknown whatever `strings_as_classified` says.
    quotes_as_names: bool,
    /// The client's character set may end a multibyte character in an ASCII byte.
    ascii_only: bool,
    /// Airlock relays LOAD DATA LOCAL INFILE (`mysql.allow_local_infile`).
    local_infile: bool,
    /// Result masking, when it applies to the session.
    results: Option<MyResults>,
    /// The session's audit records, when the listener keeps a trail.
    audit: Option<SessionAudit>,
    /// Column definitions for sampling rows where masking does not apply.
    sampler: Option<MyResults>,
    /// Whether the command last shown has a record awaiting its answer.
    staged: bool,
    /// The database the command last shown makes the session's default, if it succeeds
    /// (COM_INIT_DB, or text ending with a `USE`).
    switching: Option<String>,
    /// For each forwarded command the database owes an answer: whether it has a record, and
    /// the database it switches to.
    owed: std::collections::VecDeque<(bool, Option<String>)>,
    /// What each SQL-level prepared statement name may hold.
    sql_prepared: SqlPrepared,
}

impl MysqlInspector for MyGuard {
    fn command(&mut self, command: &Command<'_>) -> Verdict {
        // What runs is judged for the session's database, which an unanswered USE or
        // COM_INIT_DB may be changing: a client that does not wait for its answer is refused
        // (text after it is recorded as refused).
        let unanswered = self.owed.iter().any(|(_, switch)| switch.is_some());
        if unanswered
            && matches!(
                command,
                Command::Prepare { .. } | Command::Execute { .. } | Command::InitDb { .. }
            )
        {
            return Verdict::Deny(switch_unanswered());
        }
        match command {
            Command::Query { sql } => {
                let judged = self.judge_text(sql);
                let mut refusal = unanswered.then(switch_unanswered);
                // A USE is followed only where the server surely runs it as Airlock read it.
                if refusal.is_none()
                    && judged
                        .statements
                        .iter()
                        .any(|s| s.database.is_some() || s.has("unreadable_use"))
                {
                    match lone_use(sql, &judged) {
                        Some(database) => self.switching = Some(database),
                        None => refusal = Some(use_not_alone()),
                    }
                }
                if let Some(audit) = &mut self.audit {
                    audit.statement(&judged, sql, Vec::new(), Ends::Completion);
                    self.staged = true;
                }
                if let Some(denial) = refusal {
                    return Verdict::Deny(denial);
                }
                if !self.local_infile && has_finding(&judged, "local_infile") {
                    return Verdict::Deny(local_infile_off());
                }
                judged.verdict.clone()
            }
            Command::Prepare { sql } => {
                // Preparing runs nothing: it is judged when executed.
                self.preparing = Some(self.judge_text(sql));
                self.preparing_text = self
                    .audit
                    .is_some()
                    .then(|| Arc::from(String::from_utf8_lossy(sql)));
                Verdict::Forward
            }
            Command::Execute { stmt_id, params } => match self.statements.get_mut(stmt_id) {
                Some(s) => {
                    // A held statement's ticket, and the record, show the values it runs with.
                    let holdable = matches!(s.judged.verdict, Verdict::Hold(_));
                    let shown = if holdable || self.audit.is_some() {
                        match command::execute_params(params, s.params, &mut s.types) {
                            Some(values) => values
                                .into_iter()
                                .map(|v| Some(self.guard.redact(&v)))
                                .collect(),
                            None => {
                                vec![Some("(parameters not readable)".into()); s.params.into()]
                            }
                        }
                    } else {
                        Vec::new()
                    };
                    if let Some(audit) = &mut self.audit {
                        let text = s.text.as_deref().unwrap_or("");
                        audit.statement(
                            &s.judged,
                            text.as_bytes(),
                            shown.clone(),
                            Ends::Completion,
                        );
                        self.staged = true;
                    }
                    match &s.judged.verdict {
                        Verdict::Hold(hold) => {
                            let mut hold = hold.clone();
                            hold.request.params = shown;
                            Verdict::Hold(hold)
                        }
                        verdict => verdict.clone(),
                    }
                }
                None => self.synthetic(
                    Kind::Unknown,
                    "unknown_prepared_statement",
                    format!("statement {stmt_id} was not prepared through Airlock in this session"),
                ),
            },
            Command::Statement {
                code: command::COM_STMT_CLOSE,
                stmt_id,
            } => {
                self.statements.remove(stmt_id);
                Verdict::Forward
            }
            Command::Statement { .. } => Verdict::Forward,
            Command::InitDb { schema } => match std::str::from_utf8(schema) {
                Ok(name) if !name.contains('\0') => {
                    // Judged, and recorded, as the USE it does.
                    let sql = format!("USE `{}`", name.replace('`', "``"));
                    let judged = self.judge_text(sql.as_bytes());
                    if let Some(audit) = &mut self.audit {
                        audit.statement(&judged, sql.as_bytes(), Vec::new(), Ends::Completion);
                        self.staged = true;
                    }
                    self.switching = Some(name.to_owned());
                    judged.verdict.clone()
                }
                _ => Verdict::Deny(Denial {
                    message: "COM_INIT_DB names a database Airlock cannot read".into(),
                    detail: Some("the name is not UTF-8, or holds a NUL byte".into()),
                    hint: Some("name the database in UTF-8".into()),
                }),
            },
            Command::Other { code } => match admin_command(*code) {
                Some(name) => self.synthetic(
                    Kind::Admin,
                    "admin_command",
                    format!("{name} administers the server"),
                ),
                None => Verdict::Forward,
            },
        }
    }

    fn status(&mut self, flags: Option<u16>) {
        self.strings_as_classified =
            flags.is_some_and(|f| f & SERVER_STATUS_NO_BACKSLASH_ESCAPES == 0);
    }

    fn forwarded(&mut self, answer: bool) {
        let recorded = std::mem::take(&mut self.staged);
        let switching = self.switching.take();
        if answer {
            self.owed.push_back((recorded, switching));
        } else if recorded && let Some(audit) = &mut self.audit {
            audit.settle_last(None);
        }
    }

    fn refused(&mut self, errno: u16) {
        self.switching = None;
        if std::mem::take(&mut self.staged)
            && let Some(audit) = &mut self.audit
        {
            audit.settle_last(Some(errno));
        }
    }

    fn answered(&mut self, rows: Option<u64>, error: Option<u16>) {
        let Some((recorded, switching)) = self.owed.pop_front() else {
            return;
        };
        if recorded && let Some(audit) = &mut self.audit {
            match error {
                Some(errno) => audit.failed(&errno.to_string()),
                None => audit.completed(rows),
            }
        }
        if let (Some(database), None) = (switching, error) {
            self.switch_to(database);
        }
    }

    fn pending_records(&mut self) -> Ack {
        self.audit
            .as_mut()
            .map_or(Ok(()), SessionAudit::take_pending)
    }

    fn wants_rows(&self) -> bool {
        self.results.is_some() || self.sampler.is_some()
    }

    fn columns(&mut self) {
        if let Some(r) = self.results.as_mut().or(self.sampler.as_mut()) {
            r.columns();
        }
    }

    fn definition(&mut self, payload: &[u8]) {
        if let Some(r) = self.results.as_mut().or(self.sampler.as_mut()) {
            r.definition(payload);
        }
    }

    fn row(&mut self, binary: bool, payload: &[u8]) -> Rewrite {
        let rewrite = match self.results.as_mut().map(|r| r.row(binary, payload)) {
            Some(Ok(body)) => Rewrite::from_body(body),
            Some(Err(e)) => Rewrite::Refuse(e.reason),
            None => Rewrite::Keep,
        };
        if let Some(audit) = self.audit.as_mut().filter(|a| a.wants_rows())
            && let Some(columns) = self.results.as_ref().or(self.sampler.as_ref())
        {
            let sent = match &rewrite {
                Rewrite::Replace(masked) => masked.as_slice(),
                _ => payload,
            };
            if let Some(values) = columns.values(binary, sent) {
                let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
                audit.row(&values);
            }
        }
        rewrite
    }

    fn error(&mut self, payload: &[u8]) -> Rewrite {
        Rewrite::from_body(self.results.as_ref().and_then(|r| r.error(payload)))
    }

    fn prepared(&mut self, statement: Option<(u32, u16)>) {
        let judged = self.preparing.take();
        if let (Some((id, params)), Some(judged)) = (statement, judged)
            && (self.statements.len() < MAX_STATEMENTS || self.statements.contains_key(&id))
        {
            let statement = Statement {
                judged,
                params,
                types: None,
                text: self.preparing_text.take(),
            };
            self.statements.insert(id, statement);
        }
    }
}

/// A statement the session prepared.
struct Statement {
    judged: Arc<Judged>,
    /// Its parameter count, from the server's answer.
    params: u16,
    /// The parameter types last sent with it (only read for a statement that may be held).
    types: Option<Vec<(u8, u8)>>,
    /// Its text as sent, when the session is audited.
    text: Option<Arc<str>>,
}

/// The database `sql` switches to, if it is a lone `USE name` that the server surely runs as
/// Airlock read it: one statement, no other `;` (an empty statement after it fails after the
/// switch), and no version-gated comment (which the server may skip where Airlock did not).
fn lone_use(sql: &[u8], judged: &Judged) -> Option<String> {
    let [only] = &judged.statements[..] else {
        return None;
    };
    let text = sql.trim_ascii();
    let text = text.strip_suffix(b";").unwrap_or(text);
    let gated = |marker: &[u8]| memchr::memmem::find(text, marker).is_some();
    if text.contains(&b';') || gated(b"/*!") || gated(b"/*M!") {
        return None;
    }
    only.database.clone()
}

fn use_not_alone() -> Denial {
    Denial {
        message: "Airlock follows a USE only when it is sent on its own".into(),
        detail: Some(
            "this text holds a USE with other statements, a version-gated comment (/*! */, \
             /*M! */) or a database name Airlock cannot read, so Airlock cannot be sure which \
             database the session is in afterwards"
                .into(),
        ),
        hint: Some("send USE name as a statement by itself".into()),
    }
}

fn switch_unanswered() -> Denial {
    Denial {
        message: "a command arrived before the database answered the session's USE or \
                  COM_INIT_DB"
            .into(),
        detail: Some(
            "Airlock judges each command for the session's database, which that answer \
             decides"
                .into(),
        ),
        hint: Some("wait for each answer before sending the next command".into()),
    }
}

fn has_finding(judged: &Judged, code: &str) -> bool {
    judged
        .statements
        .iter()
        .any(|s| s.findings.iter().any(|f| f.code == code))
}

/// Before any policy: Airlock itself does not relay a client's files unless configured to.
fn local_infile_off() -> Denial {
    Denial {
        message: "LOAD DATA LOCAL INFILE is turned off in Airlock".into(),
        detail: None,
        hint: Some(
            "set allow_local_infile = true under [mysql] in Airlock's config to relay the \
             client's file, or load a file on the database server with LOAD DATA INFILE"
                .into(),
        ),
    }
}

/// Commands that administer the server without SQL text.
fn admin_command(code: u8) -> Option<&'static str> {
    match code {
        0x07 => Some("COM_REFRESH"),
        0x08 => Some("COM_SHUTDOWN"),
        command::COM_PROCESS_KILL => Some("COM_PROCESS_KILL"),
        0x0d => Some("COM_DEBUG"),
        _ => None,
    }
}

impl MyGuard {
    fn judge_text(&mut self, sql: &[u8]) -> Arc<Judged> {
        // SQL-level PREPARE ... FROM 'text' and EXECUTE go through the session's names.
        let session = TextSession {
            who: &self.who,
            state: &mut self.text,
            strings_as_classified: self.strings_as_classified && !self.quotes_as_names,
            ascii_only: self.ascii_only,
            prepared: &mut self.sql_prepared,
        };
        let judged = judge_text(&self.guard, session, sql);
        // The server does not say when the client's character set or ANSI_QUOTES changes:
        // once the session may have switched to one Airlock cannot read (a SET NAMES, SET
        // CHARACTER SET or SET sql_mode that is not refused), text past ASCII, or holding a
        // backslash, is unknown for the rest of it.
        if !matches!(judged.verdict, Verdict::Deny(_)) {
            for s in judged.statements.iter() {
                self.ascii_only |= s.has("client_encoding");
                self.quotes_as_names |=
                    s.has("string_syntax_change") && crate::sql::mysql_set_may_quote_names(&s.text);
            }
        }
        judged
    }

    /// The session's default database is now `database`: the policy's `databases` match it
    /// from now on. Decisions are remembered for the new one apart, and a prepared statement
    /// (whose names MySQL may have resolved in either) is judged the stricter of the two ways.
    fn switch_to(&mut self, database: String) {
        if self.who.database == database {
            return;
        }
        tracing::debug!(session = self.who.session, %database, "default database changed");
        self.who.database = database;
        self.text.rescope(self.guard.scope_of(&self.who));
        for s in self.statements.values_mut() {
            let again = judge(
                &self.guard,
                &self.who,
                s.judged.statements.clone(),
                s.judged.dynamic.clone(),
            );
            if again.severity > s.judged.severity {
                s.judged = Arc::new(again);
            }
        }
    }

    fn synthetic(&mut self, kind: Kind, code: &'static str, reason: String) -> Verdict {
        let mut statement = Classified::unknown("", code, reason);
        statement.kind = kind;
        let judged = judge_one(&self.guard, &self.who, statement);
        if let Some(audit) = &mut self.audit {
            audit.statement(&judged, code.as_bytes(), Vec::new(), Ends::Completion);
            self.staged = true;
        }
        judged.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Dialect;

    /// A session connected to `test` under a policy that makes `prod` read-only.
    fn session() -> Box<dyn MysqlInspector> {
        session_under(
            "[defaults]\naction = \"allow\"\n\n\
             [[rule]]\nname = \"prod-is-read-only\"\naction = \"deny\"\n\
             kinds = [\"write\"]\ndatabases = [\"prod\"]\n",
        )
    }

    /// A session connected to `test` under the policy `text`.
    fn session_under(text: &str) -> Box<dyn MysqlInspector> {
        session_with(text, false)
    }

    /// A session connected to `test` under the policy `text`, whose sql_mode at login made
    /// `"..."` a name when `quotes_as_names`.
    fn session_with(text: &str, quotes_as_names: bool) -> Box<dyn MysqlInspector> {
        let guard = crate::guard::tests::guard_with(text, "mysql", Dialect::MySql);
        MyGuards(Arc::new(guard)).for_session(&SessionInfo {
            id: 1,
            user: "app".into(),
            database: "test".into(),
            application_name: None,
            client_addr: "127.0.0.1:1".parse().unwrap(),
            tls: false,
            strings_as_classified: true,
            quotes_as_names,
            ascii_only: false,
            local_infile: false,
        })
    }

    fn query(sql: &str) -> Command<'_> {
        Command::Query {
            sql: sql.as_bytes(),
        }
    }

    fn denied(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Deny(_))
    }

    #[test]
    fn a_switch_applies_when_the_server_accepts_it() {
        let mut s = session();
        let insert = query("insert into t values (1)");
        assert_eq!(s.command(&query("USE prod")), Verdict::Forward);
        s.forwarded(true);
        s.answered(None, Some(1049)); // unknown database: still in test
        assert_eq!(s.command(&insert), Verdict::Forward);
        s.forwarded(true);
        s.answered(Some(1), None);
        assert_eq!(
            s.command(&Command::InitDb { schema: b"prod" }),
            Verdict::Forward
        );
        s.forwarded(true);
        s.answered(None, None);
        assert!(denied(&s.command(&insert)));
    }

    #[test]
    fn com_init_db_is_judged_as_the_use_it_does() {
        let mut s = session_under(
            "[defaults]\naction = \"allow\"\n\n\
             [[rule]]\nname = \"stay-put\"\naction = \"deny\"\nkinds = [\"session\"]\n",
        );
        let init_db = Command::InitDb { schema: b"prod" };
        let v = s.command(&init_db);
        let Verdict::Deny(d) = &v else {
            panic!("{v:?}")
        };
        assert!(d.message.contains("stay-put"), "{d:?}");
        s.refused(1142);
        // A name with a backquote is quoted as MySQL quotes it: one USE, not unreadable text.
        let mut s = session_under(
            "[defaults]\naction = \"allow\"\n\n\
             [[rule]]\nname = \"no-unknowns\"\naction = \"deny\"\nkinds = [\"unknown\"]\n",
        );
        assert!(
            denied(&s.command(&query("USE `we`ird`"))),
            "misquoted: unknown"
        );
        s.refused(1142);
        let odd = Command::InitDb { schema: b"we`ird" };
        assert_eq!(s.command(&odd), Verdict::Forward);
    }

    #[test]
    fn a_command_sent_before_the_switch_is_answered_is_refused() {
        let mut s = session();
        assert_eq!(s.command(&query("USE prod")), Verdict::Forward);
        s.forwarded(true);
        // Pipelined: the server has not answered the USE yet.
        let v = s.command(&query("select 1"));
        let Verdict::Deny(d) = &v else {
            panic!("{v:?}")
        };
        assert!(d.message.contains("before the database answered"), "{d:?}");
        s.refused(1142);
        assert!(denied(&s.command(&Command::InitDb { schema: b"test" })));
        s.refused(1142);
        s.answered(None, None);
        assert!(denied(&s.command(&query("insert into t values (1)"))));
    }

    #[test]
    fn a_use_is_followed_only_when_it_is_sent_alone() {
        for sql in [
            "USE prod; insert into t values (1)",
            "select 1; USE prod",
            "SELECT 1 /*!99999 ; USE prod */",
            "SELECT 1 /*M!999999 ; USE prod */",
            "USE prod;;",
            "USE a.b",
        ] {
            let mut s = session();
            assert!(denied(&s.command(&query(sql))), "{sql}");
        }
        for sql in ["USE prod", "use `prod`;", "/* app */ USE prod ; "] {
            let mut s = session();
            assert_eq!(s.command(&query(sql)), Verdict::Forward, "{sql}");
            s.forwarded(true);
            s.answered(None, None);
            assert!(
                denied(&s.command(&query("insert into t values (1)"))),
                "{sql}"
            );
        }
        let mut s = session();
        assert!(denied(&s.command(&Command::InitDb {
            schema: b"pro\xffd"
        })));
    }

    /// The server does not tell Airlock of a new client character set: once the session may
    /// have switched to one Airlock cannot read, text past ASCII is unknown.
    #[test]
    fn a_switch_to_a_character_set_airlock_cannot_read_makes_text_past_ascii_unknown() {
        let policy = "[defaults]\naction = \"allow\"\n\n\
             [[rule]]\nname = \"no-unknowns\"\naction = \"deny\"\nkinds = [\"unknown\"]\n\n\
             [[rule]]\nname = \"not-big5\"\naction = \"deny\"\nfindings = [\"client_encoding\"]\n\
             databases = [\"prod\"]\n";
        let accented = query("SELECT 'café' FROM t");
        // Switches Airlock reads as it does change nothing.
        let mut s = session_under(policy);
        for sql in ["SET NAMES utf8mb4", "SET CHARACTER SET latin1", "SELECT 1"] {
            assert_eq!(s.command(&query(sql)), Verdict::Forward, "{sql}");
        }
        assert_eq!(s.command(&accented), Verdict::Forward);
        // One that may run makes text past ASCII unknown (and denied here); ASCII still goes.
        for switch in [
            "SET CHARACTER SET sjis",
            "SET NAMES gbk",
            "SET CHARSET DEFAULT",
        ] {
            let mut s = session_under(policy);
            assert_eq!(s.command(&query(switch)), Verdict::Forward, "{switch}");
            assert!(denied(&s.command(&accented)), "{switch}");
            assert_eq!(s.command(&query("SELECT 1")), Verdict::Forward);
        }
        // One that is refused never runs: nothing changes.
        let mut s = session_under(policy);
        assert_eq!(s.command(&query("USE prod")), Verdict::Forward);
        s.forwarded(true);
        s.answered(None, None);
        assert!(denied(&s.command(&query("SET NAMES big5"))));
        s.refused(1142);
        assert_eq!(s.command(&accented), Verdict::Forward);
    }

    /// Under ANSI_QUOTES a backslash does not escape a double quote: text holding one is
    /// unknown for the whole session, whatever the status flags say, from the login's
    /// sql_mode or from a SET of sql_mode that was let through.
    #[test]
    fn once_double_quotes_may_be_names_a_backslash_is_unknown() {
        let policy = "[defaults]\naction = \"allow\"\n\n\
             [[rule]]\nname = \"no-unknowns\"\naction = \"deny\"\nkinds = [\"unknown\"]\n";
        let tricky = query("SELECT 1 AS \"a\\\" ; DROP TABLE t; -- \"");
        assert_eq!(
            session_with(policy, false).command(&tricky),
            Verdict::Forward
        );
        let mut s = session_with(policy, true);
        assert!(denied(&s.command(&tricky)));
        s.status(Some(0));
        assert!(
            denied(&s.command(&tricky)),
            "the status flags do not undo it"
        );
        assert_eq!(s.command(&query("SELECT \"a\" FROM t")), Verdict::Forward);
        let mut s = session_with(policy, false);
        assert_eq!(s.command(&query("SET sql_mode = 'ANSI'")), Verdict::Forward);
        s.status(Some(0));
        assert!(denied(&s.command(&tricky)));
        // NO_BACKSLASH_ESCAPES alone is the status flags' to tell.
        let mut s = session_with(policy, false);
        let escapes_off = query("SET sql_mode = 'NO_BACKSLASH_ESCAPES'");
        assert_eq!(s.command(&escapes_off), Verdict::Forward);
        s.status(Some(SERVER_STATUS_NO_BACKSLASH_ESCAPES));
        assert!(denied(&s.command(&tricky)));
        s.status(Some(0));
        assert_eq!(s.command(&tricky), Verdict::Forward);
    }
}
