//! The default policy's CPU per pgbench transaction: what the guard adds to the relay for the
//! messages of one transaction, with fresh literal values each time as pgbench sends them, and
//! the database's answers shown to it as the relay shows them (result masking follows them).
//! Target from the classification issue: no more than 2 µs per transaction.
//!
//! - `select_simple`: pgbench -S, simple protocol (one Query).
//! - `tpcb_simple`: pgbench's default script, simple protocol (seven Queries).
//! - `select_prepared`: pgbench -S -M prepared (Bind, Describe, Execute, Sync of a statement
//!   parsed once, as libpq sends them).
//! - `select_new_session`: pgbench -S -C, a session per transaction: the guard made for the
//!   session, its one Query and answers, and the guard dropped.
//! - `tpcb_simple_cold`: as `tpcb_simple`, for eight sessions in turn, with 4 MiB written
//!   between two statements (untimed), as the kernel's TCP stack, PostgreSQL and pgbench
//!   disturb the caches between two statements of a session in the running proxy. Only the
//!   guard's own calls are timed (one clock read pair per statement, ~20 ns each here).
//!
//! `benches/guard_misses.sh` runs `tpcb_simple_cold`'s work under cachegrind instead, and
//! counts the guard's cache misses per transaction.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::guard::Guard;
use airlock::guard::pg::PgGuards;
use airlock::inspect::{Inspector, InspectorFactory, SessionInfo, Verdict};
use airlock::mask::Masking;
use airlock::policy::Policy;
use airlock::protocol::pg::frontend::{self, tag};
use airlock::sql::Dialect;
use criterion::{Criterion, criterion_group};

fn session() -> Box<dyn Inspector> {
    session_factory().for_session(&session_info())
}

fn session_info() -> SessionInfo {
    SessionInfo {
        id: 1,
        user: "bench".into(),
        database: "test".into(),
        application_name: None,
        client_addr: "127.0.0.1:1".parse().unwrap(),
        tls: false,
        strings_as_classified: true,
        ascii_only: false,
        local_infile: false,
        quotes_as_names: false,
    }
}

/// The listener's guard, with the default policy.
fn session_factory() -> PgGuards {
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
    PgGuards(Arc::new(guard))
}

/// Shows `body` as a message with `tag` to the guard; every statement must be allowed.
fn send(guard: &mut dyn Inspector, tag: u8, body: &[u8]) {
    let message = frontend::parse(tag, body).unwrap();
    assert_eq!(guard.frontend(&message), Verdict::Forward);
}

/// Shows the database's answers to the guard as the relay does: every message's body, and
/// ReadyForQuery's status as a reply.
fn answer(guard: &mut dyn Inspector, messages: &[(u8, &[u8])]) {
    for &(tag, body) in messages {
        black_box(guard.backend(tag, body));
        if tag == b'Z' {
            guard.reply(tag, body.first().copied());
        }
    }
}

/// A RowDescription of one int4 column named `abalance`, in text format.
const ABALANCE: &[u8] = b"\0\x01abalance\0\0\0\0\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0";

/// A DataRow of one value, `-123`.
const BALANCE_ROW: &[u8] = b"\0\x01\0\0\0\x04-123";

/// pgbench -S's one statement, in a Query, and its answers.
fn select(guard: &mut dyn Inspector, query: &[u8]) {
    send(guard, tag::QUERY, black_box(query));
    answer(
        guard,
        &[
            (b'T', ABALANCE),
            (b'D', BALANCE_ROW),
            (b'C', b"SELECT 1\0"),
            (b'Z', b"I"),
        ],
    );
}

/// What the database answers to each statement of [`tpcb`].
fn tpcb_answers() -> [Vec<(u8, &'static [u8])>; 7] {
    let done = |tag: &'static [u8], status: &'static [u8]| vec![(b'C', tag), (b'Z', status)];
    [
        done(b"BEGIN\0", b"T"),
        done(b"UPDATE 1\0", b"T"),
        vec![
            (b'T', ABALANCE),
            (b'D', BALANCE_ROW),
            (b'C', b"SELECT 1\0"),
            (b'Z', b"T"),
        ],
        done(b"UPDATE 1\0", b"T"),
        done(b"UPDATE 1\0", b"T"),
        done(b"INSERT 0 1\0", b"T"),
        done(b"COMMIT\0", b"I"),
    ]
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
            select(&mut *guard, &selects[n % selects.len()]);
        })
    });

    let scripts: Vec<[Vec<u8>; 7]> = (0..1024).map(tpcb).collect();
    let answers = tpcb_answers();
    let mut guard = session();
    let mut n = 0;
    group.bench_function("tpcb_simple", |b| {
        b.iter(|| {
            n += 1;
            for (q, a) in scripts[n % scripts.len()].iter().zip(&answers) {
                send(&mut *guard, tag::QUERY, black_box(q));
                answer(&mut *guard, a);
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
    answer(&mut *guard, &[(b'1', b""), (b'Z', b"I")]);
    let binds: Vec<Vec<u8>> = (0..4096u64)
        .map(|n| {
            let value = (n * 7919 % 100_000 + 1).to_string();
            let mut body = b"\0P0_1\0\0\0\0\x01".to_vec();
            body.extend((value.len() as i32).to_be_bytes());
            body.extend(value.as_bytes());
            // One result format code (text), as libpq sends.
            body.extend([0, 1, 0, 0]);
            body
        })
        .collect();
    let mut n = 0;
    group.bench_function("select_prepared", |b| {
        b.iter(|| {
            n += 1;
            // As libpq's PQexecPrepared sends it: the portal is described each time.
            send(&mut *guard, tag::BIND, black_box(&binds[n % binds.len()]));
            send(&mut *guard, tag::DESCRIBE, b"P\0");
            send(&mut *guard, tag::EXECUTE, b"\0\0\0\0\0");
            send(&mut *guard, tag::SYNC, b"");
            answer(
                &mut *guard,
                &[
                    (b'2', b""),
                    (b'T', ABALANCE),
                    (b'D', BALANCE_ROW),
                    (b'C', b"SELECT 1\0"),
                    (b'Z', b"I"),
                ],
            );
        })
    });

    let guards = session_factory();
    let mut n = 0;
    group.bench_function("select_new_session", |b| {
        b.iter(|| {
            n += 1;
            let mut guard = guards.for_session(&session_info());
            select(&mut *guard, &selects[n % selects.len()]);
        })
    });

    let mut cold = Cold::new(false);
    group.bench_function("tpcb_simple_cold", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| cold.txn()).sum())
    });
    group.finish();
}

/// pgbench's TPC-B-like transactions over eight sessions in turn, with the caches disturbed
/// before every statement (`tpcb_simple_cold`).
struct Cold {
    sessions: Vec<Box<dyn Inspector>>,
    scripts: Vec<[Vec<u8>; 7]>,
    answers: [Vec<(u8, &'static [u8])>; 7],
    /// 4 MiB written between two statements, as the kernel's TCP stack, PostgreSQL and
    /// pgbench disturb the caches between two statements of a session in the running proxy.
    clutter: Vec<u8>,
    /// Bytes of `clutter` written before each statement, each time the next part of it (all
    /// of it by default).
    disturbed: usize,
    /// The statement arrives in a buffer just written, as the relay's read leaves it.
    received: Vec<u8>,
    /// Whether the stack is warmed after the clutter: the proxy's thread runs every session
    /// on one stack, which may stay in the cache where the sessions' own memory does not.
    warm_stack: bool,
    n: usize,
}

impl Cold {
    fn new(warm_stack: bool) -> Cold {
        Cold {
            sessions: (0..8).map(|_| session()).collect(),
            scripts: (0..1024).map(tpcb).collect(),
            answers: tpcb_answers(),
            clutter: vec![0u8; 4 << 20],
            disturbed: 4 << 20,
            received: Vec::with_capacity(4096),
            warm_stack,
            n: 0,
        }
    }

    /// One transaction; only the guard's own calls are timed.
    fn txn(&mut self) -> Duration {
        self.n += 1;
        let mut timed = Duration::ZERO;
        let script = &self.scripts[self.n % self.scripts.len()];
        for (i, (q, a)) in script.iter().zip(&self.answers).enumerate() {
            let from = (self.n * 7 + i) * self.disturbed % self.clutter.len();
            disturb(&mut self.clutter[from..from + self.disturbed]);
            if self.warm_stack {
                warm_stack();
            }
            // The statement arrives in a buffer the kernel just wrote: its misses are not
            // the guard's (nor the copy's that stands for the kernel's).
            touch(q);
            self.received.clear();
            self.received.extend_from_slice(q);
            let sessions = self.sessions.len();
            let guard = &mut *self.sessions[(self.n + i) % sessions];
            let start = Instant::now();
            send(guard, tag::QUERY, black_box(&self.received));
            answer(guard, a);
            timed += start.elapsed();
        }
        timed
    }
}

/// Writes to every cache line of `clutter`.
#[inline(never)]
fn disturb(clutter: &mut [u8]) {
    for line in clutter.chunks_mut(64) {
        line[0] = line[0].wrapping_add(1);
    }
    black_box(clutter);
}

/// Reads every cache line of `bytes`.
#[inline(never)]
fn touch(bytes: &[u8]) {
    for line in bytes.chunks(64) {
        black_box(line[0]);
    }
}

/// Brings 32 KiB of the stack below this frame into the cache.
#[inline(never)]
fn warm_stack() {
    let mut stack = std::mem::MaybeUninit::<[u8; 32 << 10]>::uninit();
    let start = stack.as_mut_ptr().cast::<u8>();
    for i in (0..32 << 10).step_by(64) {
        // SAFETY: `i` is within the array.
        unsafe { std::ptr::write_volatile(start.add(i), 1) };
    }
    black_box(&mut stack);
}

criterion_group!(benches, bench);

/// With `GUARD_COLD_TXNS=N`, runs `tpcb_simple_cold`'s work for N transactions (after 16
/// that every session judges every shape in) without criterion, for
/// `benches/guard_misses.sh` to count the cache misses under cachegrind: a count, not a
/// timing, so it compares two builds on a machine too noisy to time them.
/// `GUARD_WARM_STACK=1` warms the stack after each disturbance; `GUARD_CLUTTER_KIB=K` writes
/// K KiB (a power of two, at most 1 MiB) between two statements instead of 4 MiB, each time
/// other lines.
fn main() {
    let txns = std::env::var("GUARD_COLD_TXNS").ok();
    if let Some(txns) = txns.and_then(|n| n.parse::<usize>().ok()) {
        let mut cold = Cold::new(std::env::var_os("GUARD_WARM_STACK").is_some());
        if let Some(kib) = std::env::var("GUARD_CLUTTER_KIB")
            .ok()
            .and_then(|k| k.parse::<usize>().ok())
        {
            // A part of 4 MiB a quarter or less, so that each statement's lines are new.
            cold.disturbed = (kib << 10).clamp(64, 1 << 20).next_power_of_two();
        }
        for _ in 0..txns + 16 {
            cold.txn();
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
