//! The decision for a statement: `check(policy, request)`, pure and total.

use super::rules::{Action, MigrationMatch, Policy, Rule};
use crate::sql::classify::Classified;

/// Who asks, where, for which statement.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub listener: &'a str,
    pub database: &'a str,
    pub statement: &'a Classified,
}

/// What happens to a statement, and which rule said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'p> {
    Allow { rule: &'p Rule },
    Deny { rule: &'p Rule, message: String },
    Review { rule: &'p Rule },
}

impl Decision<'_> {
    /// Deny over review over allow.
    fn severity(&self) -> u8 {
        match self {
            Decision::Allow { .. } => 0,
            Decision::Review { .. } => 1,
            Decision::Deny { .. } => 2,
        }
    }

    pub fn rule_name(&self) -> &str {
        match self {
            Decision::Allow { rule } | Decision::Deny { rule, .. } | Decision::Review { rule } => {
                &rule.name
            }
        }
    }
}

/// The decision for one statement: the first matching rule's action, or the default.
pub fn check<'p>(policy: &'p Policy, request: &Request<'_>) -> Decision<'p> {
    let rule = policy
        .rules
        .iter()
        .find(|r| matches(r, request))
        .unwrap_or(&policy.default);
    match rule.action {
        Action::Allow => Decision::Allow { rule },
        Action::Review => Decision::Review { rule },
        Action::Deny => Decision::Deny {
            rule,
            message: rule
                .message
                .clone()
                .unwrap_or_else(|| format!("denied by policy rule \"{}\"", rule.name)),
        },
    }
}

/// The decision for a string of statements: the most restrictive of theirs.
pub fn check_all<'p>(policy: &'p Policy, requests: &[Request<'_>]) -> Option<Decision<'p>> {
    requests
        .iter()
        .map(|r| check(policy, r))
        .max_by_key(|d| d.severity())
}

/// Whether `rule` covers the request. A statement names several tables (and, in MySQL, the
/// databases they are qualified with, besides the session's) and may have several findings:
/// a rule that denies or holds covers it if any of them is listed, a rule that allows only
/// if every one is (so an allow for `scratch.*` does not let a statement that
/// also writes `billing.invoices` through, nor an allowed `drop` carry a `grant` with it).
/// Likewise a database or table name matches a rule that denies or holds whatever its case
/// (the server may fold it), and one that allows only as the database resolves it (tables:
/// quotes removed, PostgreSQL's unquoted names in lower case; see the classifier).
fn matches(rule: &Rule, r: &Request<'_>) -> bool {
    let s = r.statement;
    let has_findings = !s.findings.is_empty();
    let any = |list: &[String], value: &str| list.is_empty() || list.iter().any(|x| x == value);
    let listed_finding = |code: &str| rule.findings.iter().any(|x| x == code);
    let allows = rule.action == Action::Allow;
    let listed_table = |table: &String| {
        rule.tables.iter().any(|p| match allows {
            true => glob_within_parts(p, table),
            false => glob(p, table, true) || in_whole_schema(p, table),
        })
    };
    let listed_database = |db: &str| match allows {
        true => rule.databases.iter().any(|x| x == db),
        false => rule.databases.iter().any(|x| x.eq_ignore_ascii_case(db)),
    };
    any(&rule.users, r.user)
        && (rule.groups.is_empty() || rule.groups.iter().any(|g| r.groups.contains(g)))
        && any(&rule.listeners, r.listener)
        && (rule.databases.is_empty()
            || match allows {
                true => {
                    listed_database(r.database) && s.databases.iter().all(|d| listed_database(d))
                }
                false => {
                    listed_database(r.database) || s.databases.iter().any(|d| listed_database(d))
                }
            })
        && (rule.kinds.is_empty() || rule.kinds.contains(&s.kind))
        && (rule.findings.is_empty()
            || match allows {
                true => has_findings && s.findings.iter().all(|f| listed_finding(f.code)),
                false => s.findings.iter().any(|f| listed_finding(f.code)),
            })
        && rule.any_finding.is_none_or(|want| want == has_findings)
        && (rule.tables.is_empty()
            || match allows {
                true => !s.tables.is_empty() && s.tables.iter().all(listed_table),
                false => s.tables.iter().any(listed_table),
            })
        && match &rule.migration {
            None => true,
            Some(MigrationMatch::Any(want)) => *want == s.migration.is_some(),
            Some(MigrationMatch::Tools(tools)) => {
                s.migration.is_some_and(|m| tools.iter().any(|t| t == m))
            }
        }
}

/// Whether `table` is every relation in a schema (`billing.*`, what a DROP SCHEMA names) that
/// may hold a table `pattern` matches: one whose schema the pattern's qualifier matches, or
/// any schema for an unqualified pattern (found through the search path or the session's
/// database). `*` is some relation of the session's own schema or database that the
/// statement does not name (MySQL's DROP TRIGGER with a bare name), which may be any table
/// a pattern matches. Only for rules that deny or hold: an allow covers `billing.*` or `*`
/// only by a pattern that matches it as written.
fn in_whole_schema(pattern: &str, table: &str) -> bool {
    if table == "*" {
        return true;
    }
    let Some(schema) = table.strip_suffix(".*") else {
        return false;
    };
    match pattern.rsplit_once('.') {
        Some((qualifier, _)) => glob(qualifier, schema, true),
        None => true,
    }
}

/// `*` matches any run of characters, `?` any one; with `fold`, in any case.
pub(crate) fn glob(pattern: &str, text: &str, fold: bool) -> bool {
    glob_in(pattern, text, fold, false)
}

/// As [`glob`] in exact case, with `*` and `?` never matching a dot: what an allow covers
/// stays within the parts of a name it writes (`tmp*` covers `tmp_a`, not every table of a
/// schema `tmp`; `scratch.*` every table of `scratch`).
fn glob_within_parts(pattern: &str, text: &str) -> bool {
    glob_in(pattern, text, false, true)
}

fn glob_in(pattern: &str, text: &str, fold: bool, parts: bool) -> bool {
    let chars = |s: &str| -> Vec<char> {
        match fold {
            true => s.to_lowercase().chars().collect(),
            false => s.chars().collect(),
        }
    };
    let (p, t) = (chars(pattern), chars(text));
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    // A wildcard may match this character of the text.
    let wild = |c: char| !(parts && c == '.');
    while ti < t.len() {
        if pi < p.len() && ((p[pi] == '?' && wild(t[ti])) || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star.filter(|_| wild(t[mark])) {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyError;
    use crate::sql::Dialect;
    use crate::sql::classify::classify;

    fn policy(text: &str) -> Policy {
        Policy::parse(&[("test.toml".into(), text.into())]).unwrap()
    }

    fn decide<'p>(p: &'p Policy, user: &str, groups: &[&str], sql: &str) -> Decision<'p> {
        decide_in(Dialect::Postgres, p, user, groups, sql)
    }

    fn decide_in<'p>(
        dialect: Dialect,
        p: &'p Policy,
        user: &str,
        groups: &[&str],
        sql: &str,
    ) -> Decision<'p> {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let classified = classify(sql, dialect);
        let requests: Vec<Request<'_>> = classified
            .iter()
            .map(|statement| Request {
                user,
                groups: &groups,
                listener: "pg",
                database: "prod",
                statement,
            })
            .collect();
        check_all(p, &requests).unwrap()
    }

    use crate::policy::SHIPPED_DEFAULT as DEFAULT;

    #[test]
    fn the_shipped_default_policy() {
        let p = policy(DEFAULT);
        assert!(matches!(
            decide(&p, "app", &[], "select * from users where id = 1"),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            decide(&p, "app", &[], "update users set name = 'x' where id = 1"),
            Decision::Allow { .. }
        ));
        for risky in [
            "delete from users",
            "drop table users",
            "grant all on users to intern",
            "do $$ begin perform 1; end $$",
            "select pg_terminate_backend(42)",
            "alter table users add column x int not null",
        ] {
            let d = decide(&p, "app", &[], risky);
            assert!(matches!(d, Decision::Review { .. }), "{risky}: {d:?}");
        }
    }

    #[test]
    fn an_allow_covers_a_statement_only_if_it_lists_every_table_and_finding() {
        let p = policy(
            r#"
            [defaults]
            action = "review"
            approvers = ["dba"]

            [[rule]]
            name = "scratch-is-free"
            action = "allow"
            tables = ["scratch.*"]

            [[rule]]
            name = "dba-may-drop-and-truncate"
            action = "allow"
            groups = ["dba"]
            findings = ["drop", "truncate"]

            [[rule]]
            name = "no-billing-writes"
            action = "deny"
            kinds = ["write"]
            tables = ["billing.*"]
            "#,
        );
        let rule = |user: &str, groups: &[&str], sql: &str| {
            decide(&p, user, groups, sql).rule_name().to_owned()
        };
        // Every table listed: allowed.
        assert_eq!(
            rule(
                "app",
                &[],
                "update scratch.a set x = b.y from scratch.b where a.id = b.id"
            ),
            "scratch-is-free"
        );
        // One table not listed: the allow does not cover it, and a deny that lists any of
        // its tables does.
        assert_eq!(
            rule(
                "app",
                &[],
                "update billing.invoices set paid = true from scratch.a where a.id = 1"
            ),
            "no-billing-writes"
        );
        assert_eq!(
            rule(
                "app",
                &[],
                "select * from scratch.a join billing.cards using (id)"
            ),
            "default"
        );
        // A statement naming no table is not covered by an allow that lists tables.
        assert_eq!(rule("app", &[], "select 1"), "default");

        // Every finding listed: allowed; one more (a GRANT with the DROP): not.
        assert_eq!(
            rule("ann", &["dba"], "drop table t"),
            "dba-may-drop-and-truncate"
        );
        assert_eq!(
            rule("ann", &["dba"], "truncate t"),
            "dba-may-drop-and-truncate"
        );
        assert_eq!(
            rule("ann", &["dba"], "drop table t cascade"),
            "dba-may-drop-and-truncate"
        );
        assert_eq!(rule("ann", &["dba"], "delete from t"), "default");
    }

    #[test]
    fn database_names_match_a_restriction_in_any_case_and_an_allow_as_written() {
        let p = policy(
            r#"
            [defaults]
            action = "allow"

            [[rule]]
            name = "sandbox-is-free"
            action = "allow"
            databases = ["sandbox"]

            [[rule]]
            name = "prod-is-read-only"
            action = "deny"
            kinds = ["write"]
            databases = ["prod"]
            "#,
        );
        let statement = classify("insert into t values (1)", Dialect::MySql).remove(0);
        let rule = |database: &str| {
            let request = Request {
                user: "app",
                groups: &[],
                listener: "mysql",
                database,
                statement: &statement,
            };
            check(&p, &request).rule_name().to_owned()
        };
        assert_eq!(rule("prod"), "prod-is-read-only");
        assert_eq!(rule("PROD"), "prod-is-read-only");
        assert_eq!(rule("sandbox"), "sandbox-is-free");
        assert_eq!(rule("SandBox"), "default");

        // MySQL: a table qualified with a database names it too, from any session.
        let rule = |database: &str, sql: &str| {
            let statement = classify(sql, Dialect::MySql).remove(0);
            let request = Request {
                user: "app",
                groups: &[],
                listener: "mysql",
                database,
                statement: &statement,
            };
            check(&p, &request).rule_name().to_owned()
        };
        assert_eq!(
            rule("test", "insert into prod.t values (1)"),
            "prod-is-read-only"
        );
        assert_eq!(
            rule("test", "insert into `Prod`.t values (1)"),
            "prod-is-read-only"
        );
        assert_eq!(
            rule("test", "update t join prod.u using (id) set t.x = u.x"),
            "prod-is-read-only"
        );
        assert_eq!(
            rule("sandbox", "insert into t select * from sandbox.u"),
            "sandbox-is-free"
        );
        assert_eq!(
            rule("sandbox", "select * from t join prod.u using (id)"),
            "default",
            "the allow does not reach prod"
        );
        assert_eq!(
            rule("sandbox", "insert into t select * from prod.u"),
            "prod-is-read-only"
        );
    }

    #[test]
    fn first_matching_rule_decides_and_the_worst_statement_wins() {
        let p = policy(
            r#"
            [defaults]
            action = "allow"

            [[rule]]
            name = "no-billing-writes"
            action = "deny"
            message = "billing is read-only here"
            kinds = ["write", "ddl"]
            tables = ["billing.*"]

            [[rule]]
            name = "dba-may-drop"
            action = "allow"
            groups = ["dba"]
            findings = ["drop"]

            [[rule]]
            name = "drops-need-review"
            action = "review"
            findings = ["drop"]
            approvers = ["dba"]
            "#,
        );
        match decide(
            &p,
            "app",
            &[],
            "update billing.invoices set paid = true where id = 1",
        ) {
            Decision::Deny { rule, message } => {
                assert_eq!(rule.name, "no-billing-writes");
                assert_eq!(message, "billing is read-only here");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&p, "app", &[], "select * from billing.invoices"),
            Decision::Allow { .. }
        ));
        assert_eq!(
            decide(&p, "ann", &["dba"], "drop table t").rule_name(),
            "dba-may-drop"
        );
        assert_eq!(
            decide(&p, "app", &[], "drop table t").rule_name(),
            "drops-need-review"
        );
        let d = decide(
            &p,
            "app",
            &[],
            "select 1; drop table t; update billing.x set a = 1 where b = 2",
        );
        assert!(
            matches!(d, Decision::Deny { .. }),
            "deny beats review beats allow: {d:?}"
        );
    }

    #[test]
    fn without_defaults_what_no_rule_allows_is_denied() {
        let p = policy("[[rule]]\nname = \"reads\"\naction = \"allow\"\nkinds = [\"read\"]\n");
        assert!(matches!(
            decide(&p, "u", &[], "select 1"),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            decide(&p, "u", &[], "insert into t values (1)"),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn migration_runs_can_be_matched_as_one_thing() {
        let p = policy(
            "[defaults]\naction = \"deny\"\n[[rule]]\nname = \"flyway\"\naction = \"allow\"\nmigration = [\"flyway\"]\n",
        );
        assert!(matches!(
            decide(
                &p,
                "ci",
                &[],
                "insert into flyway_schema_history values (1)"
            ),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            decide(&p, "ci", &[], "insert into t values (1)"),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn bad_policy_files_are_refused_with_the_rule_named() {
        let e = Policy::parse(&[(
            "p.toml".into(),
            "[[rule]]\nname = \"r\"\naction = \"review\"\n".into(),
        )])
        .unwrap_err();
        assert!(
            e.to_string().contains("\"r\"") && e.to_string().contains("approvers"),
            "{e}"
        );
        let e = Policy::parse(&[(
            "p.toml".into(),
            "[[rule]]\nname = \"r\"\naction = \"allow\"\ncolour = 1\n".into(),
        )])
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        assert_eq!(Policy::parse(&[]).unwrap_err(), PolicyError::Empty);
    }

    #[test]
    fn globs() {
        assert!(glob("billing.*", "billing.invoices", false));
        assert!(glob("*.secrets", "app.secrets", false));
        assert!(glob("t?", "T1", true));
        assert!(!glob("t?", "T1", false));
        assert!(!glob("billing.*", "public.billing", true));
        assert!(glob("*", "anything", false));
        assert!(!glob("a*b", "acd", true));
        // Within parts, as an allow reads them: a wildcard never matches a dot.
        assert!(glob("tmp*", "tmp.a", false));
        assert!(!glob_within_parts("tmp*", "tmp.a"));
        assert!(!glob_within_parts("tmp?a", "tmp.a"));
        assert!(glob_within_parts("tmp*", "tmp_a"));
        assert!(glob_within_parts("scratch.*", "scratch.a"));
        assert!(glob_within_parts("scratch.*", "scratch.*"));
        assert!(!glob_within_parts("scratch.*", "scratch.a.b"));
        assert!(glob_within_parts("*.secrets", "app.secrets"));
        assert!(glob_within_parts("*.*", "app.secrets"));
        assert!(!glob_within_parts("*", "app.secrets"));
        assert!(glob_within_parts("*", "*"));
        assert!(glob_within_parts("a*.b*", "ax.by"));
        assert!(!glob_within_parts("a*.b*", "ax.by.c"));
        assert!(!glob_within_parts("Scratch.*", "scratch.a"));
    }

    /// Quoting a name, or writing it in another case, does not slip it past a rule; and an
    /// allow does not reach a quoted name of another case, which PostgreSQL holds apart.
    #[test]
    fn a_table_rule_sees_names_as_the_database_resolves_them() {
        let p = policy(
            r#"
            [defaults]
            action = "review"
            approvers = ["dba"]

            [[rule]]
            name = "no-billing-writes"
            action = "deny"
            kinds = ["write"]
            tables = ["billing.*", "billing_history"]

            [[rule]]
            name = "scratch-is-free"
            action = "allow"
            tables = ["scratch.*"]
            "#,
        );
        let rule = |sql: &str| decide(&p, "app", &[], sql).rule_name().to_owned();
        for sneaky in [
            r#"delete from "billing_history" where id = 1"#,
            r#"delete from BILLING_HISTORY where id = 1"#,
            r#"update "billing"."invoices" set paid = true where id = 1"#,
            r#"update "BILLING".invoices set paid = true where id = 1"#,
            r#"copy billing.invoices from stdin"#,
            // Qualified with the (session's own) database.
            r#"delete from prod.billing.invoices where id = 1"#,
            r#"delete from "prod"."billing"."invoices" where id = 1"#,
        ] {
            assert_eq!(rule(sneaky), "no-billing-writes", "{sneaky}");
        }
        assert_eq!(rule(r#"update "scratch".a set x = 1"#), "scratch-is-free");
        assert_eq!(rule("update SCRATCH.a set x = 1"), "scratch-is-free");
        assert_eq!(rule(r#"update "SCRATCH".a set x = 1"#), "default");
    }

    /// A statement about every table in a schema (or MySQL database) matches a rule that
    /// denies or holds a table in it; an allow covers it only by a pattern for the whole.
    #[test]
    fn a_rule_for_a_table_sees_its_whole_schema_go() {
        let p = policy(
            r#"
            [defaults]
            action = "review"
            approvers = ["dba"]

            [[rule]]
            name = "invoices-stay"
            action = "deny"
            tables = ["billing.invoices"]

            [[rule]]
            name = "tmp-is-free"
            action = "allow"
            tables = ["scratch.tmp"]

            [[rule]]
            name = "scratch-is-free"
            action = "allow"
            tables = ["scratch.*"]

            [[rule]]
            name = "ledger-stays"
            action = "deny"
            tables = ["ledger"]
            "#,
        );
        let rule = |sql: &str| decide(&p, "app", &[], sql).rule_name().to_owned();
        for sql in [
            "DROP SCHEMA billing CASCADE",
            "DROP SCHEMA IF EXISTS \"BILLING\" CASCADE",
            "ALTER SCHEMA billing RENAME TO old_billing",
            "GRANT ALL ON ALL TABLES IN SCHEMA billing TO intern",
        ] {
            assert_eq!(rule(sql), "invoices-stay", "{sql}");
        }
        // An unqualified table may be in any schema.
        assert_eq!(rule("DROP SCHEMA public CASCADE"), "ledger-stays");
        // The allow for one table does not cover its whole schema; the one for the whole does.
        assert_eq!(rule("DROP SCHEMA scratch CASCADE"), "scratch-is-free");
        assert_eq!(rule("DROP TABLE scratch.tmp"), "tmp-is-free");
        let my = |sql: &str| {
            let decision = decide_in(Dialect::MySql, &p, "app", &[], sql);
            decision.rule_name().to_owned()
        };
        assert_eq!(my("DROP DATABASE billing"), "invoices-stay");
        assert_eq!(my("DROP SCHEMA billing"), "invoices-stay");
        assert_eq!(my("DROP DATABASE scratch"), "scratch-is-free");
        // A MySQL trigger named bare is some table's of the session's database: any table
        // a deny names may be it, and no allow for some tables covers it.
        assert_eq!(my("DROP TRIGGER tr"), "invoices-stay");
        assert_eq!(my("DROP TRIGGER billing.tr"), "invoices-stay");
        let p = policy(
            r#"
            [defaults]
            action = "review"
            approvers = ["dba"]

            [[rule]]
            name = "scratch-is-free"
            action = "allow"
            tables = ["scratch.*", "tmp_*"]
            "#,
        );
        let decision = decide_in(Dialect::MySql, &p, "app", &[], "DROP TRIGGER tr");
        assert_eq!(decision.rule_name(), "default");
    }

    /// An allow's wildcards stay within the parts of a name it writes: `tmp*` covers the
    /// tables whose names start with `tmp`, not every table of a schema `tmp` or `tmpx`;
    /// a rule that denies reaches across, as far as it can.
    #[test]
    fn an_allow_wildcard_does_not_reach_into_another_schema() {
        let p = policy(
            r#"
            [defaults]
            action = "review"
            approvers = ["dba"]

            [[rule]]
            name = "no-archive-wipes"
            action = "deny"
            findings = ["delete_without_where"]
            tables = ["archive*"]

            [[rule]]
            name = "tmp-is-free"
            action = "allow"
            tables = ["tmp*", "scratch.*"]
            "#,
        );
        let rule = |sql: &str| decide(&p, "app", &[], sql).rule_name().to_owned();
        assert_eq!(rule("insert into tmp_a values (1)"), "tmp-is-free");
        assert_eq!(rule("insert into scratch.a values (1)"), "tmp-is-free");
        assert_eq!(rule("insert into tmp.payroll values (1)"), "default");
        assert_eq!(rule("insert into tmpx.payroll values (1)"), "default");
        assert_eq!(
            rule("delete from archive_2024.invoices"),
            "no-archive-wipes"
        );
    }
}
