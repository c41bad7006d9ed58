//! A byte-level PostgreSQL client for tests that must send what no driver would: malformed or
//! oversized messages, odd protocol versions, hand-made pipelines. Logs in with SCRAM using
//! postgres-protocol's client, as any driver would.
#![allow(dead_code)]

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn tcp(port: u16) -> Raw {
        Raw {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one tagged message; `None` at EOF.
    pub async fn message(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Some((tag, body));
                }
            }
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                self.stream.read_buf(&mut self.buf),
            )
            .await
            .expect("no answer within 30 s")
            .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Whether nothing arrives within `ms` milliseconds.
    pub async fn quiet(&mut self, ms: u64) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let read = self.stream.read_buf(&mut self.buf);
        tokio::time::timeout(std::time::Duration::from_millis(ms), read)
            .await
            .is_err()
    }

    /// Reads one byte (the answer to SSLRequest/GSSENCRequest).
    pub async fn byte(&mut self) -> u8 {
        assert!(self.buf.is_empty());
        self.stream.read_u8().await.unwrap()
    }

    /// Reads messages up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.message().await {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
        panic!(
            "connection closed before ReadyForQuery; got {:?}",
            tags(&out)
        );
    }

    /// Sends a StartupMessage with `version` and `params`.
    pub async fn startup(&mut self, version: u32, params: &[(&str, &str)]) {
        let mut body = Vec::new();
        body.extend_from_slice(&version.to_be_bytes());
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        self.send(&packet).await;
    }

    /// Answers the SASL exchange that follows a StartupMessage and reads to ReadyForQuery.
    /// Returns the messages seen before authentication started (e.g. NegotiateProtocolVersion).
    pub async fn login(&mut self, password: &str) -> Vec<(u8, Vec<u8>)> {
        let mut before = Vec::new();
        let mut scram = None;
        loop {
            let (tag, body) = self.message().await.expect("closed during login");
            match tag {
                b'R' => {
                    let code = i32::from_be_bytes(body[..4].try_into().unwrap());
                    let mut out = BytesMut::new();
                    match code {
                        0 => return before,
                        10 => {
                            let s = ScramSha256::new(
                                password.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                                .unwrap();
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().unwrap();
                            s.update(&body[4..]).unwrap();
                            frontend::sasl_response(s.message(), &mut out).unwrap();
                        }
                        12 => scram.as_mut().unwrap().finish(&body[4..]).unwrap(),
                        other => panic!("unexpected auth code {other}"),
                    }
                    self.send(&out).await;
                }
                b'E' => panic!("login failed: {}", String::from_utf8_lossy(&body)),
                _ => before.push((tag, body)),
            }
        }
    }

    /// Connects to Airlock and logs in as the test user.
    pub async fn session(port: u16) -> Raw {
        Raw::session_with_key(port).await.0
    }

    /// Like [`Raw::session`], also returning the BackendKeyData (pid, secret) Airlock sent.
    pub async fn session_with_key(port: u16) -> (Raw, i32, [u8; 4]) {
        let mut raw = Raw::tcp(port).await;
        raw.startup(196608, &[("user", super::USER), ("database", "test")])
            .await;
        raw.login(super::PASSWORD).await;
        let messages = raw.until_ready().await;
        let (_, key) = messages
            .iter()
            .find(|(t, _)| *t == b'K')
            .expect("BackendKeyData");
        let pid = i32::from_be_bytes(key[..4].try_into().unwrap());
        (raw, pid, key[4..8].try_into().unwrap())
    }

    /// The database backend's pid for this session (`select pg_backend_pid()`).
    pub async fn backend_pid(&mut self) -> i32 {
        self.send(&msg(b'Q', b"select pg_backend_pid()\0")).await;
        let messages = self.until_ready().await;
        let (_, row) = messages.iter().find(|(t, _)| *t == b'D').expect("a row");
        let len = i32::from_be_bytes(row[2..6].try_into().unwrap()) as usize;
        std::str::from_utf8(&row[6..6 + len])
            .unwrap()
            .parse()
            .unwrap()
    }
}

pub fn tags(messages: &[(u8, Vec<u8>)]) -> String {
    messages.iter().map(|(t, _)| *t as char).collect()
}

/// The value of field `code` in an ErrorResponse/NoticeResponse body.
pub fn field(body: &[u8], code: u8) -> Option<String> {
    airlock::protocol::pg::backend::fields(body)
        .find(|(c, _)| *c == code)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// A frontend message with `tag` and `body`.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A CancelRequest packet.
pub fn cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    airlock::protocol::pg::startup::encode_cancel(pid, secret)
}
