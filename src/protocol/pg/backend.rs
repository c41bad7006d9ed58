//! Backend messages: the tags Airlock looks at on the way back, the messages it writes itself
//! (encoded with pgwire's message types), and a bounds-checked reader for the fields of an
//! ErrorResponse/NoticeResponse.

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};

/// Backend message tags.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
}

/// Authentication request codes (the first four bytes of an 'R' body).
pub mod auth_code {
    pub const OK: i32 = 0;
    pub const CLEARTEXT_PASSWORD: i32 = 3;
    pub const MD5_PASSWORD: i32 = 5;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

fn encode(msg: &impl Message, out: &mut BytesMut) {
    // These messages are small and well-formed by construction; pgwire only refuses
    // messages over its size caps, which Airlock's own messages never approach.
    msg.encode(out)
        .expect("Airlock's own backend messages are within pgwire's limits");
}

pub fn authentication(auth: Authentication, out: &mut BytesMut) {
    encode(&auth, out);
}

pub fn parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    encode(
        &ParameterStatus::new(name.to_owned(), value.to_owned()),
        out,
    );
}

pub fn backend_key_data(pid: i32, secret: i32, out: &mut BytesMut) {
    encode(&BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

pub fn ready_for_query_idle(out: &mut BytesMut) {
    encode(&ReadyForQuery::new(TransactionStatus::Idle), out);
}

/// Tells a client that asked for a newer minor version or `_pq_` options that Airlock speaks 3.0.
pub fn negotiate_protocol_version(unsupported_options: Vec<String>, out: &mut BytesMut) {
    encode(&NegotiateProtocolVersion::new(0, unsupported_options), out);
}

/// The fields of an ErrorResponse or NoticeResponse body, stopping at the first malformed one.
pub fn fields(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&code, tail) = rest.split_first()?;
        if code == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        rest = &tail[end + 1..];
        Some((code, &tail[..end]))
    })
}

/// The name and value of a ParameterStatus body.
/// The row count of a CommandComplete body (`SELECT 5`, `INSERT 0 1`), if its tag has one.
pub fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = body.strip_suffix(b"\0").unwrap_or(body);
    let last = tag.rsplit(|&b| b == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

pub fn parameter(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = body.split(|&b| b == 0);
    let name = parts.next()?;
    let value = parts.next()?;
    Some((name, value))
}

/// Whether a ParameterStatus body says standard_conforming_strings is off (string literals
/// then treat backslashes as escapes).
pub fn turns_off_standard_strings(body: &[u8]) -> bool {
    matches!(parameter(body), Some((b"standard_conforming_strings", v)) if v != b"on")
}

/// The SQLSTATE of an ErrorResponse body, if it has one.
pub fn sqlstate(body: &[u8]) -> Option<&[u8]> {
    fields(body).find(|(c, _)| *c == b'C').map(|(_, v)| v)
}

/// The primary message of an ErrorResponse body, lossily decoded.
pub fn message(body: &[u8]) -> String {
    fields(body)
        .find(|(c, _)| *c == b'M')
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_error_fields_and_stops_at_garbage() {
        let body = b"SERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
        assert_eq!(sqlstate(body), Some(&b"42P01"[..]));
        assert_eq!(message(body), "relation \"x\" does not exist");
        assert_eq!(fields(b"SERR").count(), 0, "unterminated field");
        assert_eq!(fields(b"").count(), 0);
    }

    #[test]
    fn reads_parameter_status() {
        assert_eq!(
            parameter(b"TimeZone\0UTC\0"),
            Some((&b"TimeZone"[..], &b"UTC"[..]))
        );
        assert!(turns_off_standard_strings(
            b"standard_conforming_strings\0off\0"
        ));
        assert!(!turns_off_standard_strings(
            b"standard_conforming_strings\0on\0"
        ));
        assert!(!turns_off_standard_strings(b"TimeZone\0off\0"));
        assert_eq!(parameter(b"no-terminator"), None);
    }

    #[test]
    fn encodes_key_data_and_ready() {
        let mut out = BytesMut::new();
        backend_key_data(42, 7, &mut out);
        assert_eq!(&out[..], b"K\0\0\0\x0c\0\0\0\x2a\0\0\0\x07");
        out.clear();
        ready_for_query_idle(&mut out);
        assert_eq!(&out[..], b"Z\0\0\0\x05I");
    }
}
