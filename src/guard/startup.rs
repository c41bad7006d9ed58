//! The settings a PostgreSQL client asks for in its start-up packet: a parameter the database
//! takes as a setting (`session_replication_role=replica`, `role=...`), or `-c name=value` in
//! `options`, which libpq sends from PGOPTIONS. The database applies them before the session's
//! first statement, as Airlock's upstream user, so each is classified as the SET that would
//! make it, before the database sees it. An ordinary session setting passes; one that is more
//! (a role, a setting that hides the session from the database's own record, a finding) is
//! judged by the policy, and one it does not allow refuses the session: a start-up packet
//! cannot wait for an approver. Pure.

use super::{Guard, judge};
use crate::inspect::{Denial, Verdict};
use crate::sql::Dialect;
use crate::sql::classify::{Kind, classify};

/// Settings Airlock follows itself from the start-up packet and the database's
/// ParameterStatus, with no statement that could race them: under a client encoding that
/// may split ASCII, text past ASCII is unknown; with standard_conforming_strings off, text
/// with a backslash is.
const FOLLOWED: &[&str] = &["client_encoding", "standard_conforming_strings"];

/// Settings drivers send with every connection, which the classifier takes as ordinary
/// session settings whatever their value (a unit test holds it to that): passed without
/// parsing a SET for each new connection.
const EVERYDAY: &[&str] = &[
    "application_name",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "timezone",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// Whether `settings` (name and value, as [`StartupMessage::settings`] gives them) may reach
/// the database for `user` in `database`; the refusal otherwise.
///
/// [`StartupMessage::settings`]: crate::protocol::pg::startup::StartupMessage::settings
pub fn admit(
    guard: &Guard,
    user: &str,
    database: &str,
    settings: &[(String, String)],
) -> Result<(), Denial> {
    // Made for the first setting that needs judging (most sessions have none).
    let mut who = None;
    for (name, value) in settings {
        let known = |list: &[&str]| list.iter().any(|f| f.eq_ignore_ascii_case(name));
        if known(FOLLOWED) || known(EVERYDAY) {
            continue;
        }
        let sql = set_statement(name, value);
        let statements = classify(&sql, Dialect::Postgres);
        // An ordinary session setting (application_name, DateStyle, a search path) passes
        // whatever rules say of SET: drivers send them with every connection.
        if statements
            .iter()
            .all(|s| s.kind == Kind::Session && s.findings.is_empty())
        {
            continue;
        }
        let who = who.get_or_insert_with(|| guard.who_of(user, database));
        let judged = judge(guard, who, statements.into(), None);
        if judged.verdict == Verdict::Forward {
            continue;
        }
        let rule = judged.rule.map_or("?", |r| guard.rule_name(r));
        let detail = match &judged.verdict {
            Verdict::Deny(d) => d.detail.clone(),
            Verdict::Hold(h) => h.refusal.detail.clone(),
            Verdict::Forward => None,
        };
        return Err(Denial {
            message: format!(
                "Airlock policy rule \"{rule}\" does not allow the setting {name} in the \
                 start-up packet (as SET {name}: {})",
                judged.decision()
            ),
            detail,
            hint: Some(format!(
                "connect without it (PGOPTIONS, or the driver's start-up parameters); a \
                 setting held for review cannot wait for approval at start-up, so run SET \
                 {name} in the session instead"
            )),
        });
    }
    Ok(())
}

/// The SET that makes setting `name` take `value`. A list setting (search_path) is split as
/// PostgreSQL splits it, each element a string as the server resolves it; any other value is
/// one string literal, so that no value can read as more than a value.
fn set_statement(name: &str, value: &str) -> String {
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let name = format!("\"{}\"", name.replace('"', "\"\""));
    let values: Vec<String> = if name.eq_ignore_ascii_case("\"search_path\"") {
        value
            .split(',')
            .map(|element| {
                let element = element.trim();
                match element.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
                    Some(quoted_name) => quoted(&quoted_name.replace("\"\"", "\"")),
                    None => quoted(&element.to_ascii_lowercase()),
                }
            })
            .collect()
    } else {
        vec![quoted(value)]
    };
    format!("SET {name} TO {}", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::tests::guard;
    use super::*;

    fn admitted(settings: &[(&str, &str)]) -> Result<(), Denial> {
        let guard = guard();
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        admit(&guard, "app", "test", &settings)
    }

    #[test]
    fn ordinary_start_up_settings_pass() {
        admitted(&[
            ("application_name", "psql"),
            ("client_encoding", "SJIS"),
            ("DateStyle", "ISO, MDY"),
            ("extra_float_digits", "3"),
            ("statement_timeout", "5s"),
            ("search_path", "app, public"),
            ("standard_conforming_strings", "off"),
        ])
        .unwrap();
    }

    /// The settings passed without a SET being parsed are ordinary whatever their value.
    #[test]
    fn everyday_settings_are_ordinary_session_settings() {
        for name in EVERYDAY {
            for value in ["x", "off", "0", "ISO, MDY", "x'; DROP TABLE t; --"] {
                for c in classify(&set_statement(name, value), Dialect::Postgres) {
                    assert_eq!(
                        (c.kind, c.findings.len()),
                        (Kind::Session, 0),
                        "{name}={value}"
                    );
                }
            }
        }
    }

    /// A policy that holds every SET still lets a driver's ordinary start-up settings through.
    #[test]
    fn ordinary_settings_pass_whatever_the_rules_say_of_set() {
        let guard = super::super::tests::guard_with(
            "[defaults]\naction = \"deny\"\nmessage = \"no\"\n",
            "postgres",
            Dialect::Postgres,
        );
        let settings = [("application_name".to_owned(), "app".to_owned())];
        admit(&guard, "app", "test", &settings).unwrap();
        let settings = [("role".to_owned(), "postgres".to_owned())];
        assert!(admit(&guard, "app", "test", &settings).is_err());
    }

    #[test]
    fn settings_the_policy_holds_refuse_the_session() {
        for (name, value, why) in [
            ("session_replication_role", "replica", "record_setting"),
            ("log_statement", "none", "record_setting"),
            ("role", "postgres", "privilege"),
            ("session_authorization", "postgres", "privilege"),
            (
                "search_path",
                "evil, PG_CATALOG",
                "search_path_shadows_catalog",
            ),
            ("pgaudit.log", "none", "record_setting"),
            ("zero_damaged_pages", "on", "superuser_setting"),
            // A value cannot read as more than a value.
            ("application_name", "x'; DROP TABLE t; --", ""),
        ] {
            let refused = admitted(&[(name, value)]);
            if why.is_empty() {
                assert!(refused.is_ok(), "{name}={value}");
                continue;
            }
            let denial = refused.expect_err(name);
            assert!(denial.message.contains(name), "{denial:?}");
            let detail = denial.detail.unwrap_or_default();
            assert!(detail.contains(why), "{name}: {detail}");
        }
    }
}
