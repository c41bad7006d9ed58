//! The classifier against tests/corpus/postgres.toml and tests/corpus/mysql.toml: every case's
//! kinds and findings must match exactly; no risky case may come out as a plain read or write
//! without findings; and the share of ordinary statements that would be held (a finding, or
//! unknown) is reported.

use std::collections::BTreeSet;

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

fn run(file: &str, dialect: Dialect) {
    let path = format!("{}/tests/corpus/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let corpus: Corpus = toml::from_str(&text).unwrap();
    let mut mismatches = Vec::new();
    let (mut ordinary, mut held) = (0, 0);
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
        let would_hold = got
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
        "{file}: {} cases, {ordinary} ordinary of which {held} would be held ({:.1}%), {} risky",
        corpus.case.len(),
        100.0 * held as f64 / ordinary.max(1) as f64,
        corpus.case.len() - ordinary
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
