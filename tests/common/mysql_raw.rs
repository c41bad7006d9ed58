//! A byte-level MySQL client for tests that must send what no driver does, such as several
//! commands in one write before reading any answer (pipelining). Logs in with
//! mysql_native_password using mysql_common's packets and scramble, as a driver would.
#![allow(dead_code)]

use bytes::{Buf, BytesMut};
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use mysql_common::scramble::scramble_native;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{PASSWORD, USER};

const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;

pub struct MyRaw {
    stream: TcpStream,
    buf: BytesMut,
}

/// One answer to a COM_QUERY, with the sequence id of its first packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok {
        seq: u8,
    },
    Err {
        seq: u8,
        code: u16,
    },
    /// A text result set: each row's first column (`None` for NULL).
    Rows {
        seq: u8,
        first: Vec<Option<String>>,
    },
}

impl MyRaw {
    /// Connects to `port` and logs in as the test user to database `test`, without TLS and
    /// with CLIENT_DEPRECATE_EOF.
    pub async fn login(port: u16) -> MyRaw {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut raw = MyRaw {
            stream,
            buf: BytesMut::new(),
        };
        let (_, greeting) = raw.packet().await;
        let hello = HandshakePacket::deserialize((), &mut ParseBuf(&greeting)).unwrap();
        let scramble = scramble_native(&hello.nonce(), PASSWORD.as_bytes()).unwrap();
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_DEPRECATE_EOF;
        let response = HandshakeResponse::new(
            Some(&scramble[..]),
            (0, 0, 0),
            Some(USER.as_bytes()),
            Some(&b"test"[..]),
            Some(AuthPlugin::MysqlNativePassword),
            caps,
            None,
            1 << 24,
        );
        let mut payload = Vec::new();
        response.serialize(&mut payload);
        raw.send(&[(1, payload)]).await;
        let (_, ok) = raw.packet().await;
        assert_eq!(ok.first(), Some(&0), "logged in: {ok:?}");
        raw
    }

    /// Writes these packets (sequence id, payload) in one write.
    pub async fn send(&mut self, packets: &[(u8, Vec<u8>)]) {
        let mut out = Vec::new();
        for (seq, payload) in packets {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
            out.push(*seq);
            out.extend_from_slice(payload);
        }
        self.stream.write_all(&out).await.unwrap();
    }

    /// Sends these statements as COM_QUERY commands, all in one write.
    pub async fn pipeline(&mut self, statements: &[&str]) {
        let packets: Vec<(u8, Vec<u8>)> = statements
            .iter()
            .map(|sql| (0, [&[COM_QUERY][..], sql.as_bytes()].concat()))
            .collect();
        self.send(&packets).await;
    }

    /// Sends COM_INIT_DB (what the mariadb client's `use` sends) and reads its answer.
    pub async fn init_db(&mut self, name: &str) -> Reply {
        self.send(&[(0, [&[COM_INIT_DB][..], name.as_bytes()].concat())])
            .await;
        self.reply().await
    }

    /// The next packet: its sequence id and payload.
    pub async fn packet(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], 0]) as usize;
                if self.buf.len() >= 4 + len {
                    let seq = self.buf[3];
                    self.buf.advance(4);
                    return (seq, self.buf.split_to(len).to_vec());
                }
            }
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                self.stream.read_buf(&mut self.buf),
            )
            .await
            .expect("an answer within 30 s")
            .unwrap();
            assert!(read > 0, "the connection closed before the answer");
        }
    }

    /// Reads one answer to a COM_QUERY (a single result).
    pub async fn reply(&mut self) -> Reply {
        let (seq, head) = self.packet().await;
        match head.first() {
            Some(0x00) => Reply::Ok { seq },
            Some(0xff) => Reply::Err {
                seq,
                code: u16::from_le_bytes([head[1], head[2]]),
            },
            _ => {
                for _ in 0..head[0] {
                    self.packet().await;
                }
                let mut first = Vec::new();
                loop {
                    let (_, row) = self.packet().await;
                    if row.first() == Some(&0xfe) && row.len() < 0xff_ffff {
                        return Reply::Rows { seq, first };
                    }
                    first.push(first_column(&row));
                }
            }
        }
    }
}

/// A text row's first column: a length-encoded string (short ones only), or NULL.
fn first_column(row: &[u8]) -> Option<String> {
    match row[0] {
        0xfb => None,
        n if n < 0xfb => Some(String::from_utf8(row[1..1 + n as usize].to_vec()).unwrap()),
        _ => panic!("a first column longer than 250 bytes"),
    }
}
