//! The classifier against tests/corpus/postgres.toml and tests/corpus/mysql.toml: every case's
//! kinds and findings must match exactly; no risky case may come out as a plain read or write
//! without findings; and each case's decision under the shipped default policy is what its
//! label says: an ordinary statement is allowed (the share that is not is reported, as wrongly
//! held), a risky one is never allowed.

use std::collections::BTreeSet;

use airlock::policy::check::check_all;
use airlock::policy::{Decision, Policy, Request};
use airlock::sql::Dialect;
use airlock::sql::classify::{Kind, classify};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    sql: String,
    kinds: Vec<String>,
    #[serde(default)]
    findings: Vec<String>,
    #[serde(default)]
    ordinary: bool,
    /// A schema change a migration linter would pass (CREATE TABLE, a nullable column, an
    /// index built CONCURRENTLY, a constraint NOT VALID): held by the default policy, which
    /// leaves every schema change to a DBA, and counted apart.
    #[serde(default)]
    schema_change: bool,
    migration: Option<String>,
}

fn kind_name(k: Kind) -> String {
    format!("{k:?}").to_lowercase()
}

#[test]
fn postgres_corpus() {
    run("postgres.toml", Dialect::Postgres);
}

#[test]
fn mysql_corpus() {
    run("mysql.toml", Dialect::MySql);
}

fn default_policy() -> Policy {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.toml");
    let text = std::fs::read_to_string(path).unwrap();
    Policy::parse(&[("default.toml".into(), text)]).unwrap()
}

fn load(file: &str) -> Corpus {
    let path = format!("{}/tests/corpus/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str(&text).unwrap()
}

fn run(file: &str, dialect: Dialect) {
    let policy = default_policy();
    let listener = match dialect {
        Dialect::MySql => "mysql",
        Dialect::Postgres => "postgres",
    };
    let corpus = load(file);
    let mut mismatches = Vec::new();
    let (mut ordinary, mut held, mut schema_changes) = (0, 0, 0);
    let mut risky_missed = Vec::new();
    for case in &corpus.case {
        let got = classify(&case.sql, dialect);
        let kinds: Vec<String> = got.iter().map(|c| kind_name(c.kind)).collect();
        let findings: BTreeSet<&str> = got
            .iter()
            .flat_map(|c| c.findings.iter().map(|f| f.code))
            .collect();
        let expected: BTreeSet<&str> = case.findings.iter().map(String::as_str).collect();
        if kinds != case.kinds || findings != expected {
            mismatches.push(format!(
                "{:?}: got {kinds:?} {findings:?}, want {:?} {expected:?}",
                case.sql, case.kinds
            ));
        }
        if let Some(tool) = &case.migration
            && !got.iter().any(|c| c.migration == Some(tool.as_str()))
        {
            mismatches.push(format!(
                "{:?}: migration tool {tool} not recognised",
                case.sql
            ));
        }
        let requests: Vec<Request<'_>> = got
            .iter()
            .map(|statement| Request {
                user: "app",
                groups: &[],
                listener,
                database: "test",
                statement,
            })
            .collect();
        let allowed = matches!(check_all(&policy, &requests), Some(Decision::Allow { .. }));
        if case.schema_change {
            schema_changes += 1;
            continue;
        }
        if !case.ordinary && allowed {
            mismatches.push(format!(
                "{:?}: risky, yet the default policy allows it",
                case.sql
            ));
        }
        let would_hold = !allowed
            || got
                .iter()
                .any(|c| c.kind == Kind::Unknown || !c.findings.is_empty());
        if case.ordinary {
            ordinary += 1;
            held += would_hold as usize;
        } else if !would_hold
            && got
                .iter()
                .all(|c| matches!(c.kind, Kind::Read | Kind::Write))
        {
            risky_missed.push(case.sql.clone());
        }
    }
    println!(
        "{file}: {} cases, {ordinary} ordinary of which {held} would be held ({:.1}%), \
         {schema_changes} safe schema changes (held by the default policy by design), {} risky",
        corpus.case.len(),
        100.0 * held as f64 / ordinary.max(1) as f64,
        corpus.case.len() - ordinary - schema_changes
    );
    assert!(
        risky_missed.is_empty(),
        "risky statements classified as safe: {risky_missed:#?}"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn postgres_corpus_with_other_values() {
    other_values("postgres.toml", Dialect::Postgres);
}

#[test]
fn mysql_corpus_with_other_values() {
    other_values("mysql.toml", Dialect::MySql);
}

/// The classification cache keys statements by shape (literal values left out), so a
/// statement of the same shape as a cached one is served its classification. For every
/// corpus case and every variant of it with other literal values (0 and 1 swapped, strings
/// made 'on', 'off', 'x'), what the cache serves must be what classifying the variant gives.
fn other_values(file: &str, dialect: Dialect) {
    let corpus = load(file);
    let mut compared = 0;
    for case in &corpus.case {
        for variant in variants(&case.sql) {
            let mut cache = airlock::sql::cache::Cache::new(dialect, 16, 1 << 20);
            cache.classify(&case.sql);
            let served = cache.classify(&variant);
            let fresh = classify(&variant, dialect);
            let seen = |c: &[airlock::sql::classify::Classified]| {
                c.iter()
                    .map(|c| {
                        let findings: BTreeSet<&str> = c.findings.iter().map(|f| f.code).collect();
                        (c.kind, findings, c.tables.clone(), c.migration)
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                seen(&served),
                seen(&fresh),
                "{variant}\nserved as the cached {}",
                case.sql
            );
            compared += 1;
        }
    }
    assert!(compared > 100, "only {compared} variants");
}

/// `sql` with its plain literal values replaced, one way per variant.
fn variants(sql: &str) -> Vec<String> {
    let numbers = [|n: &str| if n == "0" { "1" } else { "0" }, |_: &str| "1"];
    let strings = ["on", "off", "x"];
    let mut out = Vec::new();
    for (i, string) in strings.iter().enumerate() {
        let number = numbers[i % numbers.len()];
        let mut variant = String::new();
        let b = sql.as_bytes();
        let mut at = 0;
        while at < b.len() {
            let c = b[at];
            let after_word = at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
            if c == b'\'' && !after_word {
                match sql[at + 1..].find('\'') {
                    Some(len) if !sql[at + 1..at + 1 + len].contains('\\') => {
                        variant.push_str(&format!("'{string}'"));
                        at += len + 2;
                        continue;
                    }
                    _ => {}
                }
            }
            if c.is_ascii_digit() && !after_word {
                let len = sql[at..]
                    .find(|ch: char| !ch.is_ascii_digit())
                    .unwrap_or(sql.len() - at);
                variant.push_str(number(&sql[at..at + len]));
                at += len;
                continue;
            }
            let ch = sql[at..].chars().next().unwrap();
            variant.push(ch);
            at += ch.len_utf8();
        }
        if variant != sql {
            out.push(variant);
        }
    }
    out
}
