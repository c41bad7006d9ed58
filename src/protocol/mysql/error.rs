//! ERR packets Airlock itself sends to a MySQL client, each with a real error number and
//! SQLSTATE and a message that names the cause and the next step. Only the constructors here
//! make client-visible errors, so internal detail and secrets have no path to the wire.

use bytes::{BufMut, BytesMut};

use super::packet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyError {
    pub code: u16,
    pub state: &'static str,
    pub message: String,
}

impl MyError {
    fn new(code: u16, state: &'static str, message: impl Into<String>) -> MyError {
        MyError {
            code,
            state,
            message: message.into(),
        }
    }

    /// ER_ACCESS_DENIED_ERROR: the same for an unknown user, a wrong password and, over
    /// plaintext, a first caching_sha2_password login (which needs the password itself, so TLS:
    /// Airlock does no RSA key exchange); only the transport changes the wording.
    pub fn access_denied(user: &str, host: &str, tls: bool) -> MyError {
        let mut message = format!("Access denied for user '{user}'@'{host}' (using password: YES)");
        if !tls {
            message.push_str(
                "; a caching_sha2_password user's first login through Airlock must use TLS \
                 (or give the user a mysql_native_password hash in Airlock's config)",
            );
        }
        Self::new(1045, "28000", message)
    }

    /// ER_SECURE_TRANSPORT_REQUIRED.
    pub fn tls_required() -> MyError {
        Self::new(
            3159,
            "HY000",
            "Connections using insecure transport are prohibited by Airlock (mysql.require_tls); connect with TLS",
        )
    }

    /// ER_HANDSHAKE_ERROR.
    pub fn bad_handshake(detail: impl std::fmt::Display) -> MyError {
        Self::new(1043, "08S01", format!("Bad handshake: {detail}"))
    }

    /// ER_NOT_SUPPORTED_AUTH_MODE.
    pub fn unsupported_auth(plugin: &str) -> MyError {
        Self::new(
            1251,
            "08004",
            format!(
                "Client does not support authentication protocol requested by server; Airlock \
                 offers mysql_native_password and caching_sha2_password, not {plugin}"
            ),
        )
    }

    /// ER_NET_PACKET_TOO_LARGE.
    pub fn packet_too_large(len: usize, max: usize) -> MyError {
        Self::new(
            1153,
            "08S01",
            format!(
                "Got a packet bigger than Airlock's limit ({len} > {max} bytes); raise \
                 mysql.max_packet_size or send less at once"
            ),
        )
    }

    /// ER_SPECIFIC_ACCESS_DENIED_ERROR: a result value that looks like a credential and
    /// cannot be masked; the session ends.
    pub fn unmaskable(reason: &str) -> MyError {
        Self::new(
            1227,
            "42000",
            format!(
                "Airlock ended the session rather than show an unmasked value: {reason}; \
                 masking applies to this session (the policy's [mask] table): select the \
                 column as text, or ask for an exemption"
            ),
        )
    }

    /// ER_ERROR_ON_WRITE: the audit trail cannot be written while `audit = "required"`.
    pub fn audit_unavailable(reason: &str) -> MyError {
        Self::new(
            1026,
            "HY000",
            format!(
                "Airlock cannot record this statement in its audit trail ({reason}), so it \
                 refuses to run it; an operator must make Airlock's [state] dir writable again"
            ),
        )
    }

    /// ER_CON_COUNT_ERROR.
    pub fn too_many_connections(max: usize) -> MyError {
        Self::new(
            1040,
            "08004",
            format!("Too many connections: Airlock's mysql.max_connections ({max}) is reached"),
        )
    }

    /// ER_NOT_SUPPORTED_YET, for a command Airlock refuses to relay.
    pub fn unsupported_command(what: &str, fix: &str) -> MyError {
        Self::new(
            1235,
            "42000",
            format!("Airlock does not support {what} yet; {fix}"),
        )
    }

    /// The database could not be reached or refused Airlock's own login (CR_CONN_HOST_ERROR's
    /// number, as a server-side ERR so every client shows it).
    pub fn upstream_unreachable(address: &str, cause: impl std::fmt::Display) -> MyError {
        Self::new(
            2003,
            "08S01",
            format!("Airlock could not connect to the database at {address}: {cause}"),
        )
    }

    pub fn upstream_login_refused(cause: &str) -> MyError {
        Self::new(
            1045,
            "08004",
            format!(
                "the database refused Airlock's own login ({cause}); an Airlock administrator \
                 should check mysql.upstream.user and its password in the config"
            ),
        )
    }

    pub fn upstream_protocol(cause: impl std::fmt::Display) -> MyError {
        Self::new(
            2027,
            "08S01",
            format!("the database sent something Airlock did not expect: {cause}"),
        )
    }

    /// ER_QUERY_INTERRUPTED: a statement held for approval was withdrawn by a KILL QUERY.
    pub fn query_interrupted() -> MyError {
        Self::new(
            1317,
            "70100",
            "Query execution was interrupted (it was held for approval and never ran)",
        )
    }

    /// ER_NO_SUCH_THREAD: a KILL of a connection id that is not one of this user's sessions.
    pub fn unknown_thread(id: u32) -> MyError {
        Self::new(1094, "HY000", format!("Unknown thread id: {id}"))
    }

    /// The database asked the client for a local file (LOAD DATA LOCAL INFILE), which Airlock
    /// never offered and never relays.
    pub fn local_infile_requested() -> MyError {
        Self::new(
            2068,
            "HY000",
            "the database asked this client for a local file, which Airlock relays only in \
             answer to LOAD DATA LOCAL and only with allow_local_infile = true under [mysql] in \
             its config; the session is closed",
        )
    }

    /// ER_TABLEACCESS_DENIED_ERROR's number and state, for a statement the policy refused.
    pub fn denied(denial: &crate::inspect::Denial) -> MyError {
        let mut message = denial.message.clone();
        if let Some(detail) = &denial.detail {
            message.push_str(" (");
            message.push_str(detail);
            message.push(')');
        }
        if let Some(hint) = &denial.hint {
            message.push_str("; ");
            message.push_str(hint);
        }
        Self::new(1142, "42000", message)
    }

    /// The ERR packet's payload (protocol 4.1 form, with the SQLSTATE marker).
    pub fn payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(9 + self.message.len());
        p.put_u8(0xff);
        p.put_u16_le(self.code);
        p.put_u8(b'#');
        p.put_slice(self.state.as_bytes());
        p.put_slice(self.message.as_bytes());
        p
    }

    /// Appends this error as an ERR packet with sequence id `seq`.
    pub fn encode(&self, seq: u8, out: &mut BytesMut) {
        packet::put(out, seq, &self.payload());
    }
}

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}) {}", self.code, self.state, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_an_err_packet() {
        let mut out = BytesMut::new();
        MyError::tls_required().encode(2, &mut out);
        assert_eq!(out[3], 2, "sequence id");
        assert_eq!(&out[4..7], &[0xff, 0x57, 0x0c], "0xff, 3159 little-endian");
        assert_eq!(&out[7..13], b"#HY000");
        let len = u32::from_le_bytes([out[0], out[1], out[2], 0]) as usize;
        assert_eq!(len + 4, out.len());
    }
}
