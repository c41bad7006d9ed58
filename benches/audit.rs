//! What one statement's audit record costs the session's thread, piece by piece, for a
//! pgbench `-S` statement: its text masked, its event as JSON (as written, and as serde_json
//! writes the owned event), the SHA-256 of the text sent, the outcome spliced in, and the
//! record chained (SHA-256 over the previous hash and the record).
//!
//! `cargo bench --bench audit`

use std::hint::black_box;

use airlock::audit::record::{Event, Head, Outcome, sha256_hex, with_outcome};
use airlock::audit::statement_json::{SessionJson, Statement, classification};
use airlock::mask::Masker;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const SENT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 899253;";

fn event() -> Event {
    Event::Statement {
        listener: "postgres".into(),
        session: 468_015_757,
        seq: 24_160,
        user: "bench".into(),
        text: SENT.into(),
        params: Vec::new(),
        fingerprint: "select abalance from pgbench_accounts where aid = ?".into(),
        kind: "read".into(),
        findings: Vec::new(),
        rule: Some("default".into()),
        decision: "allow".into(),
        sha256: sha256_hex(SENT.as_bytes()),
        received: 1_795_680_962_775_511,
        outcome: None,
    }
}

fn outcome() -> Outcome {
    Outcome {
        duration_us: 1228,
        ran: true,
        rows: Some(1),
        error: None,
        sample: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_record");
    let event = event();
    let json = serde_json::to_string(&event).unwrap();
    let outcome = outcome();
    let completed = with_outcome(json.clone(), &outcome);
    group.bench_function("sha256_hex of the text", |b| {
        b.iter(|| sha256_hex(black_box(SENT.as_bytes())))
    });
    let masker = Masker::built_in();
    group.bench_function("text masked", |b| {
        b.iter(|| masker.text(black_box(SENT)).len())
    });
    group.bench_function("event to JSON (serde_json)", |b| {
        b.iter(|| serde_json::to_string(black_box(&event)).unwrap())
    });
    // As a session writes it: its own part and the classification's rendered before.
    let session = SessionJson::new("postgres", 468_015_757, "bench");
    let shape = classification(
        "select abalance from pgbench_accounts where aid = ?",
        "read",
        &[],
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, SENT.as_bytes());
    let statement = Statement {
        seq: 24_160,
        text: SENT,
        params: &[],
        rule: Some("default"),
        decision: "allow",
        sha256: digest.as_ref(),
        received: 1_795_680_962_775_511,
    };
    assert_eq!(session.statement(&statement, &shape), json);
    group.bench_function("event to JSON (written)", |b| {
        b.iter(|| session.statement(black_box(&statement), black_box(&shape)))
    });
    // As the log keeps it: with room for the outcome.
    let begun = || {
        let mut text = String::with_capacity(640);
        text.push_str(&json);
        text
    };
    group.bench_function("outcome spliced in", |b| {
        b.iter_batched(
            begun,
            |text| with_outcome(text, black_box(&outcome)),
            BatchSize::SmallInput,
        )
    });
    let head = Head::EMPTY.next(1, "{}".into()).head();
    group.bench_function("record chained", |b| {
        b.iter(|| black_box(&head).next(1_795_680_962_776_739, black_box(&completed).clone()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
