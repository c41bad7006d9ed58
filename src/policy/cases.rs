//! `airlock policy test`: case files (statement, identity, listener, expected decision) run
//! against a policy; any mismatch is reported. A case on the `mysql` listener is read in the
//! MySQL dialect. Pure: the caller reads the files.

use serde::Deserialize;

use super::check::{Decision, Request, check_all};
use super::rules::Policy;
use crate::sql::Dialect;
use crate::sql::classify::classify;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    sql: String,
    #[serde(default = "default_user")]
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default = "default_name")]
    listener: String,
    #[serde(default = "default_name")]
    database: String,
    /// allow | deny | review
    expect: String,
    /// The rule that should decide, if the case cares.
    rule: Option<String>,
}

fn default_user() -> String {
    "app".into()
}
fn default_name() -> String {
    "postgres".into()
}

/// The outcome of a run: how many cases passed, and a line for each that did not.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failures: Vec<String>,
}

/// Runs the cases in `files` (name, text) against `policy`.
pub fn run(policy: &Policy, files: &[(String, String)]) -> Report {
    let mut report = Report::default();
    for (name, text) in files {
        let file: CaseFile = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                report.failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        for case in file.cases {
            let classified = classify(&case.sql, Dialect::of_listener(&case.listener));
            let requests: Vec<Request<'_>> = classified
                .iter()
                .map(|statement| Request {
                    user: &case.user,
                    groups: &case.groups,
                    listener: &case.listener,
                    database: &case.database,
                    statement,
                })
                .collect();
            let Some(decision) = check_all(policy, &requests) else {
                report
                    .failures
                    .push(format!("{name}: {:?}: no statement", case.sql));
                continue;
            };
            let got = match decision {
                Decision::Allow { .. } => "allow",
                Decision::Deny { .. } => "deny",
                Decision::Review { .. } => "review",
            };
            let rule_ok = case
                .rule
                .as_deref()
                .is_none_or(|r| r == decision.rule_name());
            if got == case.expect && rule_ok {
                report.passed += 1;
            } else {
                report.failures.push(format!(
                    "{name}: {:?} as {}: expected {}{}, got {got} by rule {}",
                    case.sql,
                    case.user,
                    case.expect,
                    case.rule
                        .as_deref()
                        .map(|r| format!(" by rule {r}"))
                        .unwrap_or_default(),
                    decision.rule_name()
                ));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_cases_pass_against_the_shipped_policy() {
        let policy = Policy::parse(&crate::policy::shipped_default()).unwrap();
        let cases = [(
            "default.toml".to_string(),
            include_str!("../../policies/cases/default.toml").to_string(),
        )];
        let report = run(&policy, &cases);
        assert!(report.failures.is_empty(), "{:#?}", report.failures);
        assert!(report.passed >= 10);
    }

    #[test]
    fn a_wrong_expectation_is_reported() {
        let policy =
            Policy::parse(&[("p.toml".into(), "[defaults]\naction = \"allow\"\n".into())]).unwrap();
        let cases = [(
            "c.toml".to_string(),
            "[[case]]\nsql = \"drop table t\"\nexpect = \"deny\"\n".to_string(),
        )];
        let report = run(&policy, &cases);
        assert_eq!(report.passed, 0);
        assert!(
            report.failures[0].contains("expected deny, got allow"),
            "{:?}",
            report.failures
        );
    }
}
