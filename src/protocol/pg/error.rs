//! Errors Airlock itself sends to a PostgreSQL client, each with a real SQLSTATE and a message
//! that names the cause and the next step. Only the constructors here make client-visible
//! errors, so internal detail and secrets have no path to the wire.

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, NoticeResponse};

/// SQLSTATE codes Airlock uses (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlState(pub &'static str);

impl SqlState {
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    pub const CONNECTION_FAILURE: SqlState = SqlState("08006");
    pub const UNABLE_TO_CONNECT: SqlState = SqlState("08001");
    pub const CONNECTION_REJECTED: SqlState = SqlState("08004");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    pub const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
    pub const INVALID_PASSWORD: SqlState = SqlState("28P01");
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState("53300");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState("42501");
    pub const SUCCESSFUL_COMPLETION: SqlState = SqlState("00000");
    pub const QUERY_CANCELED: SqlState = SqlState("57014");
    pub const IO_ERROR: SqlState = SqlState("58030");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Sent as a NoticeResponse: the client is told, nothing fails.
    Notice,
    Error,
    Fatal,
}

/// An error for the client. `Fatal` ones are followed by closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    fn fatal(code: SqlState, message: impl Into<String>) -> PgError {
        PgError {
            severity: Severity::Fatal,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }

    /// A statement the policy refused (42501, as PostgreSQL's own permission errors): an
    /// ERROR, so the session carries on.
    pub fn denied(denial: &crate::inspect::Denial) -> PgError {
        PgError {
            severity: Severity::Error,
            code: SqlState::INSUFFICIENT_PRIVILEGE,
            message: denial.message.clone(),
            detail: denial.detail.clone(),
            hint: denial.hint.clone(),
        }
    }

    /// A start-up setting the policy refused: the session ends (FATAL, as PostgreSQL's own
    /// errors about start-up settings).
    pub fn denied_at_startup(denial: &crate::inspect::Denial) -> PgError {
        PgError {
            severity: Severity::Fatal,
            ..Self::denied(denial)
        }
    }

    /// A part of the start-up `options` that is not a setting Airlock can read.
    pub fn unreadable_options(part: String) -> PgError {
        Self::fatal(
            SqlState::FEATURE_NOT_SUPPORTED,
            format!("Airlock does not pass \"{part}\" in the start-up options"),
        )
        .hint("give settings in options (PGOPTIONS) as -c name=value or --name=value")
    }

    pub fn protocol_violation(detail: impl std::fmt::Display) -> PgError {
        Self::fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!("protocol violation: {detail}"),
        )
        .hint("the client sent a message Airlock cannot read; check the driver version")
    }

    pub fn message_too_large(len: usize, max: usize) -> PgError {
        Self::fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!("message of {len} bytes is larger than Airlock's limit of {max} bytes"),
        )
        .hint("send smaller statements or raise postgres.max_message_size in Airlock's config")
    }

    pub fn row_too_large(len: usize, max: usize) -> PgError {
        Self::fatal(
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            format!("a result row of {len} bytes is larger than Airlock's inspection limit of {max} bytes"),
        )
        .hint("select fewer or smaller columns, or raise postgres.max_message_size in Airlock's config")
    }

    /// The audit trail cannot be written while `audit = "required"`: statements are refused
    /// rather than run unaudited.
    pub fn audit_unavailable(reason: &str) -> PgError {
        Self::fatal(
            SqlState::IO_ERROR,
            format!("Airlock cannot record this statement in its audit trail ({reason}), so it refuses to run it"),
        )
        .hint("an operator must make Airlock's [state] dir writable again; the statement did not run")
    }

    /// A result value Airlock can neither pass (it looks like a credential) nor mask.
    pub fn unmaskable(reason: &str) -> PgError {
        Self::fatal(
            SqlState::INSUFFICIENT_PRIVILEGE,
            format!("Airlock ended the session rather than show an unmasked value: {reason}"),
        )
        .hint("masking applies to this session (the policy's [mask] table); ask for text results, or ask for an exemption")
    }

    pub fn tls_required() -> PgError {
        Self::fatal(
            SqlState::INVALID_AUTHORIZATION,
            "Airlock requires TLS on this listener",
        )
        .hint("connect with sslmode=require (or verify-full)")
    }

    pub fn cleartext_needs_tls() -> PgError {
        Self::fatal(
            SqlState::INVALID_AUTHORIZATION,
            "password authentication is only accepted over TLS on this listener",
        )
        .hint("connect with sslmode=require")
    }

    pub fn no_user() -> PgError {
        Self::fatal(
            SqlState::INVALID_AUTHORIZATION,
            "no user name specified in startup packet",
        )
    }

    pub fn password_failed(user: &str) -> PgError {
        Self::fatal(
            SqlState::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    }

    pub fn auth_protocol(detail: &str) -> PgError {
        Self::fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!("authentication failed: {detail}"),
        )
    }

    pub fn unsupported_protocol(major: u16, minor: u16) -> PgError {
        Self::fatal(
            SqlState::FEATURE_NOT_SUPPORTED,
            format!("unsupported frontend protocol {major}.{minor}: Airlock supports 3.0"),
        )
    }

    pub fn replication_unsupported() -> PgError {
        Self::fatal(
            SqlState::FEATURE_NOT_SUPPORTED,
            "Airlock does not proxy replication connections",
        )
        .hint("connect replication clients to the database directly")
    }

    pub fn too_many_connections(max: usize) -> PgError {
        Self::fatal(
            SqlState::TOO_MANY_CONNECTIONS,
            format!("sorry, too many clients already: Airlock's limit is {max}"),
        )
        .hint("close idle connections or raise postgres.max_connections in Airlock's config")
    }

    pub fn upstream_unreachable(address: &str, cause: impl std::fmt::Display) -> PgError {
        Self::fatal(
            SqlState::UNABLE_TO_CONNECT,
            format!("Airlock could not connect to the database at {address}: {cause}"),
        )
        .hint(
            "check that the database is running and postgres.upstream.address in Airlock's config",
        )
    }

    pub fn upstream_tls(address: &str, cause: impl std::fmt::Display) -> PgError {
        Self::fatal(
            SqlState::UNABLE_TO_CONNECT,
            format!("Airlock could not set up TLS with the database at {address}: {cause}"),
        )
        .hint("check postgres.upstream.tls, ca_file and server_name in Airlock's config")
    }

    pub fn upstream_login_refused(cause: &str) -> PgError {
        Self::fatal(
            SqlState::CONNECTION_REJECTED,
            format!("the database refused Airlock's own login: {cause}"),
        )
        .hint("an Airlock administrator should check postgres.upstream.user and its password in the config")
    }

    pub fn upstream_protocol(cause: impl std::fmt::Display) -> PgError {
        Self::fatal(
            SqlState::CONNECTION_FAILURE,
            format!("the database sent something Airlock did not expect: {cause}"),
        )
    }

    pub fn shutting_down() -> PgError {
        Self::fatal(
            SqlState::ADMIN_SHUTDOWN,
            "terminating connection because Airlock is shutting down",
        )
        .hint("reconnect; another Airlock instance or the restarted one will take it")
    }

    pub fn upstream_lost() -> PgError {
        Self::fatal(
            SqlState::CONNECTION_FAILURE,
            "Airlock lost its connection to the database",
        )
        .hint("reconnect; if it keeps happening check the database's log")
    }

    fn fields(&self) -> Vec<(u8, String)> {
        let severity = match self.severity {
            Severity::Notice => "NOTICE",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut fields = vec![
            (b'S', severity.to_owned()),
            (b'V', severity.to_owned()),
            (b'C', self.code.0.to_owned()),
            (b'M', self.message.clone()),
        ];
        if let Some(detail) = &self.detail {
            fields.push((b'D', detail.clone()));
        }
        if let Some(hint) = &self.hint {
            fields.push((b'H', hint.clone()));
        }
        fields
    }

    /// Appends this error as an ErrorResponse (a notice as a NoticeResponse).
    pub fn encode(&self, out: &mut BytesMut) {
        let encoded = match self.severity {
            Severity::Notice => NoticeResponse::new(self.fields()).encode(out),
            Severity::Error | Severity::Fatal => ErrorResponse::new(self.fields()).encode(out),
        };
        encoded.expect("these messages reach no size limit");
    }

    /// A held statement the client cancelled, as PostgreSQL reports a cancelled query.
    pub fn cancelled() -> PgError {
        PgError {
            severity: Severity::Error,
            code: SqlState::QUERY_CANCELED,
            message: "canceling statement due to user request".into(),
            detail: Some("it was held for approval and never ran".into()),
            hint: None,
        }
    }

    /// The notice a client gets when its statement is held for approval.
    pub fn held(message: &str) -> PgError {
        PgError {
            severity: Severity::Notice,
            code: SqlState::SUCCESSFUL_COMPLETION,
            message: message.to_owned(),
            detail: None,
            hint: Some(
                "the statement runs once approved; cancel or disconnect to withdraw it".into(),
            ),
        }
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code.0, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn encodes_an_error_response_postgres_clients_read() {
        let mut out = BytesMut::new();
        PgError::tls_required().encode(&mut out);
        assert_eq!(out[0], b'E');
        let len = (&out[1..5]).get_i32() as usize;
        assert_eq!(len + 1, out.len());
        let body = &out[5..];
        assert!(body.windows(6).any(|w| w == b"C28000"));
        assert_eq!(*body.last().unwrap(), 0);
    }
}
