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

fn run(file: &str, dialect: Dialect) {
    let policy = default_policy();
    let listener = match dialect {
        Dialect::MySql => "mysql",
        Dialect::Postgres => "postgres",
    };
    let path = format!("{}/tests/corpus/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let corpus: Corpus = toml::from_str(&text).unwrap();
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
