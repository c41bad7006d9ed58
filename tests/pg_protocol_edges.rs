//! Byte-level edges of the protocol: encryption requests, protocol versions, malformed and
//! oversized messages (08P01, that session closes, others carry on), the connection limit,
//! FunctionCall, and the inspection seam seeing every statement, parameter and row.

mod common;

use std::sync::{Arc, Mutex};

use airlock::inspect::{Inspector, InspectorFactory, Interest, Rewrite, SessionInfo, Verdict};
use airlock::protocol::pg::frontend::FrontendMessage;
use common::raw::{Raw, field, msg, tags};
use common::{PASSWORD, Proxy, Setup, USER};

const V3_0: u32 = 196608;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_requests_without_tls_are_declined_and_startup_goes_on() {
    let proxy = Proxy::start().await;
    let mut raw = Raw::tcp(proxy.port).await;
    // GSSENCRequest, then SSLRequest: both 'N' (no certificate configured), then a normal login.
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await;
    assert_eq!(raw.byte().await, b'N');
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await;
    assert_eq!(raw.byte().await, b'N');
    raw.startup(V3_0, &[("user", USER), ("database", "test")])
        .await;
    raw.login(PASSWORD).await;
    let ready = raw.until_ready().await;
    assert!(
        tags(&ready).contains('K'),
        "BackendKeyData is sent: {}",
        tags(&ready)
    );
    assert!(tags(&ready).contains('S'), "ParameterStatus is relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_minor_version_is_negotiated_down_and_unknown_major_refused() {
    let proxy = Proxy::start().await;
    let mut raw = Raw::tcp(proxy.port).await;
    raw.startup(
        196610,
        &[
            ("user", USER),
            ("database", "test"),
            ("_pq_.something", "x"),
        ],
    )
    .await;
    let before = raw.login(PASSWORD).await;
    let (tag, body) = &before[0];
    assert_eq!(*tag, b'v', "NegotiateProtocolVersion first");
    assert_eq!(
        &body[..4],
        &0i32.to_be_bytes(),
        "newest minor version Airlock speaks: 0"
    );
    assert_eq!(&body[4..8], &1i32.to_be_bytes(), "one unsupported option");
    assert_eq!(&body[8..], b"_pq_.something\0");
    raw.until_ready().await;
    raw.send(&msg(b'Q', b"select 1\0")).await;
    assert_eq!(tags(&raw.until_ready().await), "TDCZ");

    let mut raw = Raw::tcp(proxy.port).await;
    raw.startup(4 << 16, &[("user", USER)]).await;
    let (tag, body) = raw.message().await.unwrap();
    assert_eq!(tag, b'E');
    assert_eq!(field(&body, b'C').as_deref(), Some("0A000"));
    assert!(raw.message().await.is_none(), "connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_gets_08p01_and_only_that_session_closes() {
    let proxy = Proxy::start().await;
    let bystander = proxy.connect().await;
    let cases: Vec<Vec<u8>> = vec![
        msg(b'Q', b"select 1"),                           // no NUL terminator
        msg(b'P', b"stmt\0select 1\0\0"),                 // parameter count cut short
        msg(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xf0\0\0"), // parameter length -16
        msg(b'E', b"portal"),                             // no NUL, no row limit
        vec![b'Q', 0, 0, 0, 2],                           // length below 4
        vec![b'd', 0x80, 0, 0, 0],                        // negative length
        vec![b'X', 0, 0, 0, 5],                           // Terminate claiming a body
    ];
    for bytes in cases {
        let mut raw = Raw::session(proxy.port).await;
        raw.send(&bytes).await;
        let (tag, body) = raw.message().await.expect("an error before closing");
        assert_eq!(tag, b'E', "for {bytes:?}");
        assert_eq!(
            field(&body, b'C').as_deref(),
            Some("08P01"),
            "for {bytes:?}"
        );
        assert_eq!(field(&body, b'S').as_deref(), Some("FATAL"));
        assert!(
            raw.message().await.is_none(),
            "the session is closed after {bytes:?}"
        );
    }
    assert_eq!(common::one_i32(&bystander, "select 3").await, 3);
    proxy
        .connect()
        .await
        .query_one("select 1", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_statement_is_refused_with_the_limit_named() {
    let proxy = Setup {
        postgres_extra: "max_message_size = 65536\n".into(),
        ..Setup::default()
    }
    .start()
    .await;
    let mut raw = Raw::session(proxy.port).await;
    let mut sql = b"select '".to_vec();
    sql.extend(std::iter::repeat_n(b'x', 100_000));
    sql.extend_from_slice(b"'\0");
    raw.send(&msg(b'Q', &sql)).await;
    let (tag, body) = raw.message().await.unwrap();
    assert_eq!(tag, b'E');
    assert_eq!(field(&body, b'C').as_deref(), Some("08P01"));
    assert!(field(&body, b'H').unwrap().contains("max_message_size"));
    assert!(raw.message().await.is_none());

    // A statement under the limit, and COPY data over it (streamed, not held), both pass.
    let client = proxy.connect().await;
    let big = "y".repeat(60_000);
    let n: i32 = client
        .query_one("select length($1::text)", &[&big])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 60_000);
    client
        .batch_execute("create temp table big_copy (t text)")
        .await
        .unwrap();
    let sink = client.copy_in("copy big_copy from stdin").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    let line = format!("{}\n", "z".repeat(200_000));
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from(line))
        .await
        .unwrap();
    assert_eq!(
        sink.as_mut().finish().await.unwrap(),
        1,
        "one 200 kB CopyData message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_answers_53300() {
    let proxy = Setup {
        postgres_extra: "max_connections = 2\n".into(),
        ..Setup::default()
    }
    .start()
    .await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let e = common::refused(&proxy.conninfo("")).await;
    assert_eq!(common::sqlstate(&e), "53300");
    drop((a, b));
    assert!(
        common::eventually(50, || async {
            tokio_postgres::connect(&proxy.conninfo(""), tokio_postgres::NoTls)
                .await
                .is_ok()
        })
        .await,
        "room again once sessions end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_message_is_relayed() {
    let proxy = Proxy::start().await;
    let mut raw = Raw::session(proxy.port).await;
    // FunctionCall: int4abs (OID 1397) with one binary int4 argument -7, binary result.
    let mut body = Vec::new();
    body.extend_from_slice(&1397u32.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&4i32.to_be_bytes());
    body.extend_from_slice(&(-7i32).to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    raw.send(&msg(b'F', &body)).await;
    let messages = raw.until_ready().await;
    assert_eq!(tags(&messages), "VZ");
    let v = &messages[0].1;
    assert_eq!(&v[..4], &4i32.to_be_bytes());
    assert_eq!(&v[4..8], &7i32.to_be_bytes());
}

/// Records what the seam is shown.
#[derive(Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
}

struct RecordingInspector(Arc<Mutex<Vec<String>>>);

impl Inspector for RecordingInspector {
    fn interest(&self) -> Interest {
        Interest {
            statements: true,
            rows: true,
            replies: true,
            outcomes: false,
            records: false,
        }
    }

    fn frontend(&mut self, m: &FrontendMessage<'_>) -> Verdict {
        let s = match m {
            FrontendMessage::Query { sql } => format!("Query {}", String::from_utf8_lossy(sql)),
            FrontendMessage::Parse(p) => format!("Parse {}", String::from_utf8_lossy(p.sql)),
            FrontendMessage::Bind(b) => format!(
                "Bind {:?}",
                b.params()
                    .map(|p| p.map(|v| String::from_utf8_lossy(v).into_owned()))
                    .collect::<Vec<_>>()
            ),
            FrontendMessage::Execute { .. } => "Execute".into(),
            FrontendMessage::FunctionCall(f) => format!("FunctionCall {}", f.function_oid),
            FrontendMessage::Close { target, .. } => format!("Close {}", *target as char),
            FrontendMessage::Describe { target, .. } => format!("Describe {}", *target as char),
            FrontendMessage::Sync => "Sync".into(),
            FrontendMessage::Other { tag } => format!("Other {}", *tag as char),
        };
        self.0.lock().unwrap().push(s);
        Verdict::Forward
    }

    fn reply(&mut self, tag: u8, _status: Option<u8>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("reply {}", tag as char));
    }

    fn backend(&mut self, tag: u8, _body: &[u8]) -> Rewrite {
        // Rows and their descriptions; the seam shows every message to a row inspector.
        if matches!(tag, b'T' | b'D') {
            self.0
                .lock()
                .unwrap()
                .push(format!("backend {}", tag as char));
        }
        Rewrite::Keep
    }
}

impl InspectorFactory for Recorder {
    fn for_session(&self, session: &SessionInfo) -> Box<dyn Inspector> {
        assert_eq!(session.user, USER);
        assert_eq!(session.database, "test");
        Box::new(RecordingInspector(self.seen.clone()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspection_seam_sees_every_statement_parameter_and_row() {
    let recorder = Arc::new(Recorder::default());
    let seen = recorder.seen.clone();
    let proxy = Setup {
        inspectors: recorder,
        ..Setup::default()
    }
    .start()
    .await;
    let client = proxy.connect().await;
    client.simple_query("select 1; select 2").await.unwrap();
    let rows = client
        .query(
            "select g, $1::text from generate_series(1, 3) g",
            &[&"param-value"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let seen = seen.lock().unwrap().clone();
    let has = |s: &str| seen.iter().any(|x| x == s);
    assert!(has("Query select 1; select 2"), "{seen:?}");
    assert!(
        has("Parse select g, $1::text from generate_series(1, 3) g"),
        "{seen:?}"
    );
    assert!(has("Bind [Some(\"param-value\")]"), "{seen:?}");
    assert!(has("Execute"), "{seen:?}");
    assert!(has("Sync"), "{seen:?}");
    let ready = seen.iter().filter(|s| *s == "reply Z").count();
    assert!(ready >= 2, "a ReadyForQuery for each sync point: {seen:?}");
    let rows_seen = seen.iter().filter(|s| *s == "backend D").count();
    assert_eq!(
        rows_seen,
        2 + 3,
        "two rows from the simple query, three from the extended one"
    );
    assert!(
        seen.iter().filter(|s| *s == "backend T").count() >= 3,
        "{seen:?}"
    );
}
