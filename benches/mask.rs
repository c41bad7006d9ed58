//! The masker on column values: clean ones (what nearly every row holds: names, emails,
//! timestamps, amounts, UUIDs, prose) and ones dense with secrets.
//! And one pgbench `-S` answer followed through a session's result masking.
//!
//! `cargo bench --bench mask`

use std::hint::black_box;

use std::sync::Arc;

use airlock::mask::pg::PgResults;
use airlock::mask::{Masker, Masking};
use airlock::policy::mask::MaskPolicy;
use airlock::protocol::pg::frontend;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// About 1 MiB of ordinary column values.
fn clean_values() -> Vec<Vec<u8>> {
    (0..20_000)
        .map(|i| {
            match i % 5 {
                0 => format!("customer-{:05} ordered {} items on monday", i, i % 17),
                1 => format!("user{}@example.com", i % 977),
                2 => format!("2024-05-{:02} 12:34:56.{:03}+00", 1 + i % 28, i % 1000),
                3 => format!("550e8400-e29b-41d4-a716-{:012x}", i * 7919),
                _ => format!(
                    "{{\"id\": {i}, \"status\": \"shipped\", \"items\": [{}, {}], \"note\": \"left at the door\"}}",
                    i % 13,
                    i % 29
                ),
            }
            .into_bytes()
        })
        .collect()
}

/// Values that each hold a secret.
fn dense_values() -> Vec<Vec<u8>> {
    (0..5_000)
        .map(|i| {
            match i % 4 {
                0 => format!("key AKIA{:016} in the config", i),
                1 => format!("postgres://app:pw{i:08}x9@db.internal:5432/prod"),
                2 => format!("ghp_{:036}", i),
                _ => format!("{{\"password\": \"Zx9!qL2#vB7@mN4${i:06}\"}}"),
            }
            .into_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let masker = Masker::built_in();
    let mut group = c.benchmark_group("mask");
    // A row of six clean values, as a DataRow's column values sit one after another: one
    // prefilter pass decides for the whole row.
    let rows: Vec<Vec<u8>> = clean_values()
        .chunks(6)
        .map(|c| {
            c.iter()
                .flat_map(|v| v.iter().copied().chain([0u8]))
                .collect()
        })
        .collect();
    let bytes: usize = rows.iter().map(Vec::len).sum();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("clean_rows", |b| {
        b.iter(|| {
            rows.iter()
                .filter(|r| masker.may_hold(black_box(r)))
                .count()
        })
    });
    let block: Vec<u8> = rows.concat();
    group.throughput(Throughput::Bytes(block.len() as u64));
    group.bench_function("clean_block", |b| {
        b.iter(|| masker.may_hold(black_box(&block)))
    });
    // The same rows as DataRow messages through a session's result masking (six text
    // columns described by a RowDescription), as the relay hands them over.
    let mut results = PgResults::new(Arc::new(
        Masking::new(&MaskPolicy::default(), None).unwrap(),
    ));
    results.frontend(&frontend::parse(b'Q', b"select\0").unwrap(), Vec::new());
    let mut description = 6u16.to_be_bytes().to_vec();
    for i in 0..6 {
        description.extend_from_slice(format!("c{i}\0").as_bytes());
        description.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
    }
    results.backend(b'T', &description).unwrap();
    let data_rows: Vec<Vec<u8>> = clean_values()
        .chunks(6)
        .map(|c| {
            let mut row = (c.len() as u16).to_be_bytes().to_vec();
            for v in c {
                row.extend_from_slice(&(v.len() as i32).to_be_bytes());
                row.extend_from_slice(v);
            }
            row
        })
        .collect();
    let bytes: usize = data_rows.iter().map(Vec::len).sum();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("clean_data_rows", |b| {
        b.iter(|| {
            data_rows
                .iter()
                .filter(|r| results.backend(b'D', black_box(r)).unwrap().is_some())
                .count()
        })
    });
    // One pgbench `-S` statement's answer, as a session's result masking follows it: the
    // Query, then RowDescription (one int4 column), DataRow, CommandComplete, ReadyForQuery.
    let query = frontend::parse(
        b'Q',
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 41;\0",
    )
    .unwrap();
    let mut abalance = 1u16.to_be_bytes().to_vec();
    abalance.extend_from_slice(b"abalance\0");
    abalance.extend_from_slice(&[
        0, 0, 0x40, 0x05, 0, 3, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
    ]);
    let mut balance = 1u16.to_be_bytes().to_vec();
    balance.extend_from_slice(&4i32.to_be_bytes());
    balance.extend_from_slice(b"-123");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pgbench_select_answer", |b| {
        b.iter(|| {
            results.frontend(black_box(&query), Vec::new());
            results.backend(b'T', black_box(&abalance)).unwrap();
            let row = results.backend(b'D', black_box(&balance)).unwrap();
            results.backend(b'C', b"SELECT 1\0").unwrap();
            results.backend(b'Z', b"I").unwrap();
            row
        })
    });
    for (name, values) in [("clean", clean_values()), ("dense", dense_values())] {
        let bytes: usize = values.iter().map(Vec::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut masked = 0;
                for v in &values {
                    if masker.mask(black_box(v)).is_some() {
                        masked += 1;
                    }
                }
                masked
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
