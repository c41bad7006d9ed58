//! `airlock policy check`: what Airlock would decide for a statement and why, as text for a
//! person. Pure: the caller reads the policy files.

use std::fmt::Write;

use super::check::{Decision, Request, check};
use super::rules::Policy;
use crate::sql::Dialect;
use crate::sql::classify::classify;

/// Who asks and where, for [`explain`].
pub struct Asker<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub listener: &'a str,
    pub database: &'a str,
}

/// Each statement's classification, findings, deciding rule and decision, then the overall
/// decision for the string.
pub fn explain(policy: &Policy, asker: &Asker<'_>, sql: &str, dialect: Dialect) -> String {
    let mut out = String::new();
    let classified = classify(sql, dialect);
    let mut worst: Option<(u8, String)> = None;
    for (i, c) in classified.iter().enumerate() {
        let request = Request {
            user: asker.user,
            groups: asker.groups,
            listener: asker.listener,
            database: asker.database,
            statement: c,
        };
        let decision = check(policy, &request);
        let _ = writeln!(out, "statement {}: {}", i + 1, c.text);
        let _ = writeln!(out, "  kind:        {}", c.kind.as_str());
        if !c.tables.is_empty() {
            let _ = writeln!(out, "  tables:      {}", described(&c.tables));
        }
        if let Some(tool) = c.migration {
            let _ = writeln!(out, "  migration:   {tool}");
        }
        for f in &c.findings {
            let _ = writeln!(out, "  finding:     {} ({})", f.code, f.reason);
        }
        let (rank, verdict) = match &decision {
            Decision::Allow { .. } => (0, "allow".to_string()),
            Decision::Review { rule } => (1, format!("review by {}", rule.approvers.join(", "))),
            Decision::Deny { message, .. } => (2, format!("deny: {message}")),
        };
        let _ = writeln!(out, "  rule:        {}", decision.rule_name());
        let _ = writeln!(out, "  decision:    {verdict}");
        if worst.as_ref().is_none_or(|(r, _)| rank > *r) {
            worst = Some((rank, verdict));
        }
    }
    match worst {
        Some((_, verdict)) => {
            let _ = writeln!(out, "overall:       {verdict}");
        }
        None => out.push_str("no statement\n"),
    }
    out
}

/// The tables a statement names, with what `schema.*` and `*` stand for.
fn described(tables: &[String]) -> String {
    let named: Vec<String> = tables
        .iter()
        .map(|t| match t.as_str() {
            "*" => "* (a table of the session's database, which one unknown)".to_owned(),
            t if t.ends_with(".*") => format!("{t} (every table in {})", &t[..t.len() - 2]),
            t => t.to_owned(),
        })
        .collect();
    named.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `app` on `listener`, in `database`, is told of `sql` under the shipped default
    /// policy.
    fn explained(listener: &str, database: &str, sql: &str, dialect: Dialect) -> String {
        let policy = Policy::parse(&crate::policy::shipped_default()).unwrap();
        let asker = Asker {
            user: "app",
            groups: &[],
            listener,
            database,
        };
        explain(&policy, &asker, sql, dialect)
    }

    #[test]
    fn explains_each_statement_and_the_overall_decision() {
        let text = explained(
            "postgres",
            "prod",
            "select 1; delete from users",
            Dialect::Postgres,
        );
        assert!(
            text.contains("statement 1: select 1\n  kind:        read"),
            "{text}"
        );
        assert!(text.contains("finding:     delete_without_where"), "{text}");
        assert!(
            text.contains("rule:        everything-else-needs-a-dba"),
            "{text}"
        );
        assert!(text.ends_with("overall:       review by dba\n"), "{text}");
    }

    #[test]
    fn says_what_a_table_pattern_stands_for() {
        let text = explained("mysql", "shop", "DROP TRIGGER tr", Dialect::MySql);
        assert!(
            text.contains("tables:      * (a table of the session's database, which one unknown)"),
            "{text}"
        );
        let text = explained("mysql", "shop", "DROP DATABASE old", Dialect::MySql);
        assert!(
            text.contains("tables:      old.* (every table in old)"),
            "{text}"
        );
    }
}
