//! Recorded exchanges replayed byte for byte. Each scenario's client bytes (after login) were
//! sent straight to PostgreSQL and its answer recorded in protocol-fixtures/NAME.server; the
//! test sends the same bytes through Airlock and requires the identical answer. Re-record with
//! `AIRLOCK_RECORD_FIXTURES=1 cargo test --test pg_fixtures` (e.g. after a PostgreSQL upgrade:
//! error messages carry the server's source file and line).

mod common;

use std::path::PathBuf;

use common::raw::{Raw, msg};

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}

fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend((types.len() as u16).to_be_bytes());
    for t in types {
        b.extend(t.to_be_bytes());
    }
    msg(b'P', &b)
}

/// Bind with all-binary int4 parameters and one result format code.
fn bind_int4(portal: &str, stmt: &str, params: &[i32], result_format: i16) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(stmt));
    b.extend(1u16.to_be_bytes());
    b.extend(1i16.to_be_bytes());
    b.extend((params.len() as u16).to_be_bytes());
    for p in params {
        b.extend(4i32.to_be_bytes());
        b.extend(p.to_be_bytes());
    }
    b.extend(1u16.to_be_bytes());
    b.extend(result_format.to_be_bytes());
    msg(b'B', &b)
}

fn bind_text(portal: &str, stmt: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(stmt));
    b.extend(0u16.to_be_bytes());
    b.extend((params.len() as u16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                b.extend((v.len() as i32).to_be_bytes());
                b.extend(v.as_bytes());
            }
            None => b.extend((-1i32).to_be_bytes()),
        }
    }
    b.extend(0u16.to_be_bytes());
    msg(b'B', &b)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(max_rows.to_be_bytes());
    msg(b'E', &b)
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend(cstr(name));
    msg(b'D', &b)
}

fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend(cstr(name));
    msg(b'C', &b)
}

fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

/// The scenarios: name and client bytes.
fn scenarios() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "simple_multi_statement",
            [
                query("select 1 as a, 'x'::text as b; select null::int as n; values (1), (2)"),
                query(""),
                query("set application_name = 'fixture'"),
                query("do $$ begin raise notice 'hello from a fixture'; end $$"),
            ]
            .concat(),
        ),
        (
            "extended_pipeline",
            [
                parse("s1", "select $1::int4 + $2::int4 as sum", &[23, 23]),
                describe(b'S', "s1"),
                bind_int4("p1", "s1", &[40, 2], 1),
                describe(b'P', "p1"),
                execute("p1", 0),
                bind_int4("", "s1", &[1, 1], 0),
                execute("", 0),
                bind_text("", "s1", &[Some("5"), None]),
                execute("", 0),
                close(b'S', "s1"),
                close(b'P', "p1"),
                sync(),
                parse("", "select generate_series(1, 5) as g", &[]),
                bind_text("c", "", &[]),
                execute("c", 2),
                execute("c", 2),
                execute("c", 0),
                sync(),
            ]
            .concat(),
        ),
        (
            "error_skips_to_sync",
            [
                parse("", "select 1 / 0", &[]),
                bind_text("", "", &[]),
                execute("", 0),
                parse("", "select 'skipped'", &[]),
                bind_text("", "", &[]),
                execute("", 0),
                sync(),
                parse("", "select 'after sync'", &[]),
                bind_text("", "", &[]),
                execute("", 0),
                sync(),
                parse("", "select 1; select 2", &[]),
                sync(),
            ]
            .concat(),
        ),
        (
            "transaction_status",
            [
                query("begin; select 1"),
                query("select 1 / 0"),
                query("select 1"),
                query("rollback"),
            ]
            .concat(),
        ),
        (
            "copy_both_ways",
            [
                query("create temp table fx (x int, y text)"),
                query("copy fx from stdin"),
                msg(b'd', b"1\tone\n2\ttwo\n"),
                msg(b'd', b"3\tthree\n"),
                msg(b'c', b""),
                query("copy fx to stdout"),
                query("copy fx from stdin"),
                msg(b'd', b"4\tfour\n"),
                msg(b'f', b"client gave up\0"),
                query("select count(*) from fx"),
            ]
            .concat(),
        ),
        ("function_call", {
            // int4abs(-7), binary argument and result.
            let mut b = Vec::new();
            b.extend(1397u32.to_be_bytes());
            b.extend(1u16.to_be_bytes());
            b.extend(1u16.to_be_bytes());
            b.extend(1u16.to_be_bytes());
            b.extend(4i32.to_be_bytes());
            b.extend((-7i32).to_be_bytes());
            b.extend(1u16.to_be_bytes());
            msg(b'F', &b)
        }),
    ]
}

/// How many ReadyForQuery messages the client bytes will produce: one per Query, Sync and
/// FunctionCall.
fn expected_ready(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while bytes.len() >= 5 {
        let len = i32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        if matches!(bytes[0], b'Q' | b'S' | b'F') {
            n += 1;
        }
        bytes = &bytes[1 + len..];
    }
    n
}

/// Sends `client` and returns the raw bytes of the answer, up to the expected ReadyForQuery.
async fn exchange(raw: &mut Raw, client: &[u8]) -> Vec<u8> {
    raw.send(client).await;
    let mut out = Vec::new();
    let mut ready = 0;
    while ready < expected_ready(client) {
        let (tag, body) = raw.message().await.expect("connection stayed open");
        if tag == b'Z' {
            ready += 1;
        }
        out.push(tag);
        out.extend(((body.len() + 4) as i32).to_be_bytes());
        out.extend(body);
    }
    out
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_exchanges_replay_byte_for_byte() {
    let record = std::env::var_os("AIRLOCK_RECORD_FIXTURES").is_some();
    let proxy = common::Proxy::start().await;
    for (name, client) in scenarios() {
        let client_file = dir().join(format!("{name}.client"));
        let server_file = dir().join(format!("{name}.server"));
        if record {
            let mut direct = Raw::tcp(5432).await;
            direct
                .startup(196608, &[("user", "postgres"), ("database", "test")])
                .await;
            direct.login("").await;
            direct.until_ready().await;
            let answer = exchange(&mut direct, &client).await;
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
        let mut raw = Raw::session(proxy.port).await;
        let got = exchange(&mut raw, &recorded_client).await;
        assert!(
            raw.quiet(200).await,
            "{name}: Airlock sent bytes after the last ReadyForQuery"
        );
        assert!(
            got == expected,
            "{name}: Airlock's answer differs from PostgreSQL's recorded one\n got: {}\nwant: {}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
    }
}
