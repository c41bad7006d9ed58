//! The default policy's CPU per pgbench transaction: what the guard adds to the relay for the
//! messages of one transaction, with fresh literal values each time as pgbench sends them.
//! Target from the classification issue: no more than 2 µs per transaction.
//!
//! - `select_simple`: pgbench -S, simple protocol (one Query).
//! - `tpcb_simple`: pgbench's default script, simple protocol (seven Queries).
//! - `select_prepared`: pgbench -S -M prepared (Bind, Execute, Sync of a statement parsed once).

use std::hint::black_box;
use std::sync::Arc;

use airlock::guard::Guard;
use airlock::guard::pg::PgGuards;
use airlock::inspect::{Inspector, InspectorFactory, SessionInfo, Verdict};
use airlock::mask::Masking;
use airlock::policy::Policy;
use airlock::protocol::pg::frontend::{self, tag};
use airlock::sql::Dialect;
use criterion::{Criterion, criterion_group, criterion_main};

fn session() -> Box<dyn Inspector> {
    let text = std::fs::read_to_string("policies/default.toml").expect("run from the repo root");
    let policy = Policy::parse(&[("default.toml".into(), text)]).unwrap();
    let masking = Arc::new(Masking::new(&policy.mask, None).unwrap());
    let guard = Guard::new(
        Arc::new(policy),
        "postgres",
        Dialect::Postgres,
        Default::default(),
        masking,
    );
    PgGuards(Arc::new(guard)).for_session(&SessionInfo {
        id: 1,
        user: "bench".into(),
        database: "test".into(),
        application_name: None,
        client_addr: "127.0.0.1:1".parse().unwrap(),
        tls: false,
        strings_as_classified: true,
        local_infile: false,
    })
}

/// Shows `body` as a message with `tag` to the guard; every statement must be allowed.
fn send(guard: &mut dyn Inspector, tag: u8, body: &[u8]) {
    let message = frontend::parse(tag, body).unwrap();
    assert_eq!(guard.frontend(&message), Verdict::Forward);
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    body
}

/// pgbench's default (TPC-B-like) script with the values of transaction `n` (scale 10).
fn tpcb(n: u64) -> [Vec<u8>; 7] {
    let (aid, tid, bid, delta) = (
        n * 7919 % 1_000_000 + 1,
        n % 100 + 1,
        n % 10 + 1,
        n as i64 % 10_000 - 5000,
    );
    [
        query("BEGIN;"),
        query(&format!(
            "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};"
        )),
        query(&format!(
            "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
        )),
        query(&format!(
            "UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};"
        )),
        query(&format!(
            "UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};"
        )),
        query(&format!(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);"
        )),
        query("END;"),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("guard_per_txn");
    let selects: Vec<Vec<u8>> = (0..4096u64)
        .map(|n| {
            query(&format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                n * 7919 % 100_000 + 1
            ))
        })
        .collect();
    let mut guard = session();
    let mut n = 0;
    group.bench_function("select_simple", |b| {
        b.iter(|| {
            n += 1;
            send(
                &mut *guard,
                tag::QUERY,
                black_box(&selects[n % selects.len()]),
            );
            guard.reply(b'Z', Some(b'I'));
        })
    });

    let scripts: Vec<[Vec<u8>; 7]> = (0..1024).map(tpcb).collect();
    let mut guard = session();
    let mut n = 0;
    group.bench_function("tpcb_simple", |b| {
        b.iter(|| {
            n += 1;
            for q in &scripts[n % scripts.len()] {
                send(&mut *guard, tag::QUERY, black_box(q));
                guard.reply(b'Z', Some(b'I'));
            }
        })
    });

    let mut guard = session();
    send(
        &mut *guard,
        tag::PARSE,
        b"P0_1\0SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0\0\x01\0\0\0\x17",
    );
    send(&mut *guard, tag::SYNC, b"");
    guard.reply(b'Z', Some(b'I'));
    let binds: Vec<Vec<u8>> = (0..4096u64)
        .map(|n| {
            let value = (n * 7919 % 100_000 + 1).to_string();
            let mut body = b"\0P0_1\0\0\0\0\x01".to_vec();
            body.extend((value.len() as i32).to_be_bytes());
            body.extend(value.as_bytes());
            body.extend([0, 0]);
            body
        })
        .collect();
    let mut n = 0;
    group.bench_function("select_prepared", |b| {
        b.iter(|| {
            n += 1;
            send(&mut *guard, tag::BIND, black_box(&binds[n % binds.len()]));
            send(&mut *guard, tag::EXECUTE, b"\0\0\0\0\0");
            send(&mut *guard, tag::SYNC, b"");
            guard.reply(b'Z', Some(b'I'));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
