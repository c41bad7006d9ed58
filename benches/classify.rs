//! Classification cost: a pgbench-style SELECT classified cold (split, parse, visit) and
//! served from the cache. Targets from the classification issue: cold under 5 µs, cached
//! under 0.3 µs.

use std::hint::black_box;

use airlock::sql::Dialect;
use airlock::sql::cache::Cache;
use airlock::sql::classify::classify;
use criterion::{Criterion, criterion_group, criterion_main};

const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const PGBENCH_UPDATE: &str =
    "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 48213;";
const ORM_JOIN: &str = "SELECT u.id, u.email, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id \
                        WHERE u.created_at > $1 GROUP BY u.id, u.email ORDER BY 3 DESC LIMIT 20";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    for (name, sql) in [
        ("pgbench_select", PGBENCH_SELECT),
        ("pgbench_update", PGBENCH_UPDATE),
        ("orm_join", ORM_JOIN),
    ] {
        group.bench_function(format!("cold/{name}"), |b| {
            b.iter(|| classify(black_box(sql), Dialect::Postgres))
        });
    }
    let mut cache = Cache::new(Dialect::Postgres, 10_000, 16 << 20);
    cache.classify(PGBENCH_SELECT);
    group.bench_function("cached/pgbench_select", |b| {
        b.iter(|| cache.classify(black_box(PGBENCH_SELECT)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
