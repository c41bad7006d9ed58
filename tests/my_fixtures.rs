//! Recorded MySQL exchanges replayed byte for byte. Each scenario is a list of commands sent
//! after login; each command's answer from MariaDB directly was recorded in
//! protocol-fixtures/mysql/NAME.server, and the test sends the same commands through Airlock
//! (no policy) and requires the identical bytes. Re-record with
//! `AIRLOCK_RECORD_FIXTURES=1 cargo test --test my_fixtures` (e.g. after a MariaDB upgrade).

mod common;

use std::path::PathBuf;

use airlock::protocol::mysql::command as cmd;
use airlock::protocol::mysql::packet::{self, Next};
use airlock::protocol::mysql::response::{Answer, Tracker};
use common::{PASSWORD, Setup, USER};
use mysql_common::constants::CapabilityFlags as C;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The capabilities the raw client asks for, on both paths alike.
fn capabilities() -> C {
    C::CLIENT_PROTOCOL_41
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_LONG_PASSWORD
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_DEPRECATE_EOF
        | C::CLIENT_CONNECT_WITH_DB
}

/// A client that speaks packets and nothing more.
struct RawMy {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Statement ids the server gave, in order: they differ from run to run (MariaDB counts
    /// them server-wide), so scenarios name them by position and recordings hold zeros.
    prepared: Vec<u32>,
}

impl RawMy {
    /// Connects and logs in with mysql_native_password.
    async fn login(port: u16, user: &str, password: &str) -> RawMy {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut raw = RawMy {
            stream,
            buf: Vec::new(),
            prepared: Vec::new(),
        };
        let (greeting, _) = raw.packet().await;
        let hello = HandshakePacket::deserialize((), &mut ParseBuf(&greeting)).unwrap();
        let scramble = mysql_common::scramble::scramble_native(&hello.nonce(), password.as_bytes())
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let response = HandshakeResponse::new(
            Some(scramble),
            (0, 0, 0),
            Some(user.as_bytes()),
            Some(&b"test"[..]),
            Some(AuthPlugin::MysqlNativePassword),
            capabilities(),
            None,
            16 << 20,
        );
        let mut out = Vec::new();
        response.serialize(&mut out);
        raw.send(1, &out).await;
        let (ok, _) = raw.packet().await;
        assert_eq!(
            ok.first(),
            Some(&0x00),
            "login: {}",
            String::from_utf8_lossy(&ok)
        );
        raw
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) {
        let mut out = bytes::BytesMut::new();
        packet::put(&mut out, seq, payload);
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next logical packet's payload and its raw bytes.
    async fn packet(&mut self) -> (Vec<u8>, Vec<u8>) {
        loop {
            if let Ok(Next::Packet(p)) = packet::logical(&self.buf, 1 << 26) {
                let raw: Vec<u8> = self.buf.drain(..p.wire_len).collect();
                let payload = packet::logical(&raw, 1 << 26).map(|n| match n {
                    Next::Packet(p) => p.payload.into_owned(),
                    Next::More { .. } => unreachable!(),
                });
                return (payload.unwrap(), raw);
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read(&mut chunk),
            )
            .await
            .expect("an answer within 10 s")
            .unwrap();
            assert!(n > 0, "the connection closed mid-answer");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command and returns its whole answer's bytes, ended where Airlock's own
    /// tracker says the answer ends.
    async fn exchange(&mut self, command: &[u8]) -> Vec<u8> {
        let mut command = command.to_vec();
        if matches!(command[0], cmd::COM_STMT_EXECUTE | cmd::COM_STMT_CLOSE) {
            // Statement ids in scenarios are positions in the list of prepared statements.
            let nth = u32::from_le_bytes(command[1..5].try_into().unwrap()) as usize;
            let id = self.prepared.get(nth).copied().unwrap_or(u32::MAX);
            command[1..5].copy_from_slice(&id.to_le_bytes());
        }
        let command = &command[..];
        self.send(0, command).await;
        let answer = Answer::to(command[0]);
        let mut tracker = Tracker::new(true);
        tracker.expect(answer);
        let mut out = Vec::new();
        if answer == Answer::Nothing {
            return out;
        }
        let mut first = true;
        loop {
            let (payload, mut raw) = self.packet().await;
            if first && answer == Answer::Prepare && payload.first() == Some(&0x00) {
                self.prepared
                    .push(u32::from_le_bytes(payload[1..5].try_into().unwrap()));
                raw[5..9].fill(0);
            }
            first = false;
            out.extend_from_slice(&raw);
            let head = &payload[..payload.len().min(32)];
            tracker.packet(payload.len(), head);
            if tracker.is_idle() {
                return out;
            }
        }
    }
}

fn query(sql: &str) -> Vec<u8> {
    let mut v = vec![cmd::COM_QUERY];
    v.extend_from_slice(sql.as_bytes());
    v
}

fn prepare(sql: &str) -> Vec<u8> {
    let mut v = vec![cmd::COM_STMT_PREPARE];
    v.extend_from_slice(sql.as_bytes());
    v
}

/// COM_STMT_EXECUTE of the `stmt`th statement prepared (from 0), with int8 parameters.
fn execute(stmt: u32, params: &[i64]) -> Vec<u8> {
    let mut v = vec![cmd::COM_STMT_EXECUTE];
    v.extend(stmt.to_le_bytes());
    v.push(0); // no cursor
    v.extend(1u32.to_le_bytes());
    if !params.is_empty() {
        v.extend(vec![0u8; params.len().div_ceil(8)]); // NULL bitmap
        v.push(1); // types follow
        for _ in params {
            v.extend([8u8, 0]); // MYSQL_TYPE_LONGLONG
        }
        for p in params {
            v.extend(p.to_le_bytes());
        }
    }
    v
}

fn scenarios() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        (
            "text_results",
            vec![
                query("SELECT 1 AS a, 'x' AS b, NULL AS n, 2.5 AS d"),
                query("SELECT 1; SELECT 'two', 3; DO 1"),
                query("SELECT seq, REPEAT('r', seq) FROM seq_1_to_20"),
                query("SELECT * FROM surely_missing_table_for_fixture"),
                query("SET @fixture = 42"),
                query("SELECT @fixture"),
            ],
        ),
        (
            "prepared_binary",
            vec![
                prepare("SELECT ? + ? AS sum, CAST(? AS CHAR) AS s"),
                execute(0, &[40, 2, 7]),
                execute(0, &[1, 1, 0]),
                prepare("SELECT seq FROM seq_1_to_5"),
                execute(1, &[]),
                vec![cmd::COM_STMT_CLOSE, 0, 0, 0, 0],
                execute(1, &[]),
                prepare("SELECT * FROM surely_missing_table_for_fixture"),
            ],
        ),
        (
            "utility_commands",
            vec![
                vec![cmd::COM_PING],
                {
                    let mut v = vec![cmd::COM_INIT_DB];
                    v.extend_from_slice(b"test");
                    v
                },
                vec![cmd::COM_RESET_CONNECTION],
                query("START TRANSACTION"),
                query("SELECT 1"),
                query("ROLLBACK"),
            ],
        ),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures/mysql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_mysql_exchanges_replay_byte_for_byte() {
    let record = std::env::var_os("AIRLOCK_RECORD_FIXTURES").is_some();
    let proxy = Setup {
        mysql: true,
        ..Setup::default()
    }
    .start()
    .await;
    for (name, commands) in scenarios() {
        let client: Vec<u8> = commands.concat();
        let client_file = dir().join(format!("{name}.client"));
        let server_file = dir().join(format!("{name}.server"));
        if record {
            std::fs::create_dir_all(dir()).unwrap();
            let mut direct = RawMy::login(3306, "root", "").await;
            let mut answer = Vec::new();
            for c in &commands {
                answer.extend(direct.exchange(c).await);
            }
            std::fs::write(&client_file, &client).unwrap();
            std::fs::write(&server_file, &answer).unwrap();
        }
        let recorded_client = std::fs::read(&client_file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; record with AIRLOCK_RECORD_FIXTURES=1",
                client_file.display()
            )
        });
        assert_eq!(
            recorded_client, client,
            "{name}: scenario changed since recording; re-record"
        );
        let expected = std::fs::read(&server_file).unwrap();
        let mut through = RawMy::login(proxy.mysql_port.unwrap(), USER, PASSWORD).await;
        let mut got = Vec::new();
        for c in &commands {
            got.extend(through.exchange(c).await);
        }
        assert!(
            got == expected,
            "{name}: Airlock's answer differs from MariaDB's recorded one\n got: {}\nwant: {}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
    }
}
