//! The untagged packets a client sends before it is authenticated: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest ([Start-up]). Each is a 4-byte length (counting itself) and a
//! 4-byte code. Sizes are bounded as PostgreSQL bounds them (10,000 bytes).
//!
//! [Start-up]: https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP

pub const MAX_STARTUP_LEN: usize = 10_000;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Protocol 3.0 as it appears in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 3 << 16;

/// First byte of a TLS ClientHello record: a client using PostgreSQL 17's direct TLS.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: Vec<u8> },
    Startup(StartupMessage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    /// Parameters in the order the client sent them.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The session settings the client asks for: every parameter the database takes as one
    /// (the [`StartupMessage::session_params`] but `options`), and those `options` makes, in
    /// order. `Err` names the first part of `options` that is not a
    /// setting Airlock can read.
    pub fn settings(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for (name, value) in self.session_params() {
            match name.as_str() {
                "options" => out.extend(option_settings(value)?),
                _ => out.push((name.clone(), value.clone())),
            }
        }
        Ok(out)
    }

    /// The parameters about the session itself, passed on to the database: all but who
    /// connects to what (`user`, `database`), `replication` and protocol options.
    pub fn session_params(&self) -> impl Iterator<Item = &(String, String)> {
        self.params.iter().filter(|(k, _)| {
            !matches!(k.as_str(), "user" | "database" | "replication") && !k.starts_with("_pq_.")
        })
    }

    /// Protocol options (`_pq_.*`) the client asked for; Airlock supports none of them.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("invalid length of startup packet ({0} bytes)")]
    BadLength(i64),
    #[error("invalid startup packet layout: {0}")]
    Layout(&'static str),
}

/// The total length of the packet at the start of `buf`, once its four length bytes are there.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, StartupError> {
    let Some(b) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if len < 8 || len as usize > MAX_STARTUP_LEN {
        return Err(StartupError::BadLength(len.into()));
    }
    Ok(Some(len as usize))
}

/// Reads a whole packet (length included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    let len = packet_len(packet)?.ok_or(StartupError::Layout("shorter than its length"))?;
    if packet.len() != len {
        return Err(StartupError::Layout("length does not match the packet"));
    }
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if !body.is_empty() => {
            Err(StartupError::Layout("encryption request with a body"))
        }
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            if body.len() < 8 || body.len() > 4 + 256 {
                return Err(StartupError::Layout(
                    "cancel request key has the wrong size",
                ));
            }
            let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            Ok(StartupPacket::Cancel {
                pid,
                secret: body[4..].to_vec(),
            })
        }
        _ => Ok(StartupPacket::Startup(StartupMessage {
            major: (code >> 16) as u16,
            minor: (code & 0xffff) as u16,
            params: parse_params(body)?,
        })),
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let name = take_cstr(&mut body)?;
        if name.is_empty() {
            if !body.is_empty() {
                return Err(StartupError::Layout("bytes after the terminating NUL"));
            }
            return Ok(params);
        }
        let value = take_cstr(&mut body)?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| StartupError::Layout("parameter name is not UTF-8"))?;
        let value = String::from_utf8(value.to_vec())
            .map_err(|_| StartupError::Layout("parameter value is not UTF-8"))?;
        params.push((name, value));
    }
}

fn take_cstr<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], StartupError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::Layout("missing NUL terminator"))?;
    let s = &buf[..end];
    *buf = &buf[end + 1..];
    Ok(s)
}

/// The settings in a start-up `options` value, read as PostgreSQL reads it: split at white
/// space (a backslash keeps the next character, a space included), then `-c name=value`,
/// `-cname=value` or `--name=value`, with `-` in a name read as `_`. `Err` names the first
/// argument that is none of those: PostgreSQL takes other switches too (`-d 5` sets
/// log_min_messages), which Airlock does not read, so it does not pass them.
pub fn option_settings(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut args = Vec::new();
    let mut arg = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => arg.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !arg.is_empty() {
                    args.push(std::mem::take(&mut arg));
                }
            }
            c => arg.push(c),
        }
    }
    if !arg.is_empty() {
        args.push(arg);
    }
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let setting = match arg.as_str() {
            "-c" => args.next().ok_or_else(|| arg.clone())?,
            a if a.starts_with("--") => a[2..].to_owned(),
            a if a.starts_with("-c") => a[2..].to_owned(),
            _ => return Err(arg),
        };
        let Some((name, value)) = setting.split_once('=') else {
            return Err(setting);
        };
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

/// Encodes a CancelRequest.
pub fn encode_cancel(pid: i32, secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + secret.len());
    out.extend_from_slice(&((12 + secret.len()) as i32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_as_postgres_reads_them() {
        let read = |o: &str| option_settings(o);
        let pairs = |v: &[(&str, &str)]| -> Result<Vec<(String, String)>, String> {
            Ok(v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect())
        };
        assert_eq!(read(""), pairs(&[]));
        assert_eq!(
            read("-c geqo=off  -cwork_mem=64MB --statement-timeout=5s"),
            pairs(&[
                ("geqo", "off"),
                ("work_mem", "64MB"),
                ("statement_timeout", "5s")
            ])
        );
        assert_eq!(
            read(r"-c search_path=a\ b,pg_catalog -c x=\\"),
            pairs(&[("search_path", "a b,pg_catalog"), ("x", "\\")])
        );
        for bad in ["-d 5", "-c", "-c geqo", "geqo=off", "-e"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    /// Encodes a StartupMessage for protocol 3.0 with `params`.
    fn encode_startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0];
        out.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        for (k, v) in params {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out.push(0);
        let len = (out.len() as i32).to_be_bytes();
        out[..4].copy_from_slice(&len);
        out
    }

    /// Encodes an SSLRequest.
    fn encode_ssl_request() -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&8i32.to_be_bytes());
        out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        out
    }

    #[test]
    fn startup_round_trips() {
        let bytes = encode_startup(&[
            ("user", "app"),
            ("database", "test"),
            ("application_name", "psql"),
        ]);
        let StartupPacket::Startup(m) = parse(&bytes).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!((m.major, m.minor), (3, 0));
        assert_eq!(m.param("user"), Some("app"));
        assert_eq!(m.param("application_name"), Some("psql"));
        assert_eq!(m.param("options"), None);
    }

    #[test]
    fn recognises_requests() {
        assert_eq!(parse(&encode_ssl_request()), Ok(StartupPacket::SslRequest));
        let mut gss = encode_ssl_request();
        gss[4..].copy_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes());
        assert_eq!(parse(&gss), Ok(StartupPacket::GssEncRequest));
        assert_eq!(
            parse(&encode_cancel(7, &[1, 2, 3, 4])),
            Ok(StartupPacket::Cancel {
                pid: 7,
                secret: vec![1, 2, 3, 4]
            })
        );
    }

    #[test]
    fn refuses_bad_packets() {
        assert!(packet_len(&[0, 0, 0, 4]).is_err());
        assert!(
            packet_len(&[0, 1, 0, 0]).is_err(),
            "65 KiB is over the limit"
        );
        assert!(packet_len(&[0xff, 0, 0, 0]).is_err());
        let mut unterminated = encode_startup(&[("user", "app")]);
        unterminated.pop();
        let len = (unterminated.len() as i32).to_be_bytes();
        unterminated[..4].copy_from_slice(&len);
        assert!(parse(&unterminated).is_err());
        let mut cancel = encode_cancel(1, &[1, 2]);
        cancel.truncate(cancel.len());
        assert!(parse(&cancel).is_err(), "a 2-byte key is too short");
    }

    #[test]
    fn lists_protocol_options() {
        let bytes = encode_startup(&[("user", "a"), ("_pq_.compression", "on")]);
        let StartupPacket::Startup(m) = parse(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(
            m.protocol_options().collect::<Vec<_>>(),
            vec!["_pq_.compression"]
        );
    }
}
