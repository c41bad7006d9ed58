//! SET statements that administer the server rather than the session: MySQL's SET GLOBAL /
//! PERSIST (`@@global.x`, ...), which change a setting for every session, and settings that
//! only a superuser may change because they switch off the database's own record or its
//! triggers (`session_replication_role`, `log_statement`, `sql_log_bin`, pgaudit's ...), or
//! let a session damage data or load code (`zero_damaged_pages`, `dynamic_library_path` ...).
//! Pure.

use sqlparser::ast::{ContextModifier, Expr, ObjectName, Set, Value};
use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::classify::Finding;

/// Settings that decide what the database logs or audits, or whether triggers and rules
/// fire: changing them hides a session's work from the database's own record.
const RECORD_SETTINGS: &[&str] = &[
    // PostgreSQL (superuser only)
    "session_replication_role",
    "log_statement",
    "log_duration",
    "log_min_duration_statement",
    "log_min_duration_sample",
    "log_statement_sample_rate",
    "log_transaction_sample_rate",
    "log_min_error_statement",
    "log_min_messages",
    "log_parameter_max_length",
    "log_parameter_max_length_on_error",
    // Off, the session's query is hidden from pg_stat_activity.
    "track_activities",
    // MySQL / MariaDB (SUPER or the like)
    "sql_log_bin",
    "sql_log_off",
    "general_log",
    "slow_query_log",
    "wsrep_on",
];

/// PostgreSQL settings only a superuser may change that let a session damage data or load
/// code: skip or zero damaged pages, modify the system catalogs, load libraries from another
/// path. Airlock's upstream user may be a superuser where the client's own role would not be.
const SUPERUSER_SETTINGS: &[&str] = &[
    "zero_damaged_pages",
    "ignore_checksum_failure",
    "allow_system_table_mods",
    "allow_in_place_tablespaces",
    "dynamic_library_path",
    "session_preload_libraries",
    "lo_compat_privileges",
];

/// Prefixes of extension settings of the same kind (pgaudit, MariaDB's audit plugin, MySQL
/// Enterprise Audit).
const RECORD_PREFIXES: &[&str] = &["pgaudit.", "server_audit_", "audit_log_"];

/// One setting a SET assigns.
struct Assigned {
    /// Lower case, without an `@@scope.` prefix.
    name: String,
    /// For every session of the server (GLOBAL, PERSIST, PERSIST_ONLY).
    global: bool,
}

/// Whether `set` changes who the session is or what it may do: the role, the session
/// authorization, or (MySQL's `SET PASSWORD = ...`) the login's password.
pub(super) fn privileged(set: &Set) -> bool {
    assigned(set).iter().any(|a| {
        matches!(
            a.name.as_str(),
            "role" | "session_authorization" | "password"
        )
    })
}

/// Whether `set` administers the server (see the module).
pub(super) fn administers(set: &Set) -> bool {
    assigned(set).iter().any(|a| {
        a.global || is_record_setting(&a.name) || SUPERUSER_SETTINGS.contains(&a.name.as_str())
    })
}

/// The findings of `set`: one per setting it changes for every session, or that changes
/// the database's own record.
pub(super) fn findings(set: &Set, out: &mut Vec<Finding>) {
    for a in assigned(set) {
        if a.global {
            out.push(Finding {
                code: "global_setting",
                reason: format!(
                    "SET GLOBAL / PERSIST changes {} for every session of the server",
                    a.name
                ),
            });
        }
        if SUPERUSER_SETTINGS.contains(&a.name.as_str()) {
            out.push(Finding {
                code: "superuser_setting",
                reason: format!(
                    "{} lets a session damage data or load code; only a superuser may change \
                     it, and Airlock's upstream user may be one",
                    a.name
                ),
            });
        }
        if is_record_setting(&a.name) {
            out.push(Finding {
                code: "record_setting",
                reason: format!(
                    "{} decides what the database logs or audits, or whether triggers fire; \
                     only a superuser may change it",
                    a.name
                ),
            });
        }
    }
}

/// The finding of a SET of PostgreSQL's search_path that puts another schema before
/// pg_catalog. Left out of the path, pg_catalog is searched first; named after a schema, a
/// function of that schema named like a built-in (`lower`) is found first, so a call Airlock
/// allows as side-effect free may run anything. (pg_temp is never searched for functions.)
pub(super) fn search_path_findings(set: &Set, out: &mut Vec<Finding>) {
    let Set::SingleAssignment {
        variable, values, ..
    } = set
    else {
        return;
    };
    if named(variable, false).name != "search_path" {
        return;
    }
    // As the server names a schema: unquoted names in lower case.
    let schema = |e: &Expr| match e {
        Expr::Identifier(id) if id.quote_style.is_none() => Some(id.value.to_ascii_lowercase()),
        Expr::Identifier(id) => Some(id.value.clone()),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    let names: Vec<Option<String>> = values.iter().map(schema).collect();
    let Some(catalog) = names
        .iter()
        .position(|n| n.as_deref() == Some("pg_catalog"))
    else {
        return;
    };
    let shadows = names[..catalog]
        .iter()
        .any(|n| !n.as_deref().is_some_and(|n| n.starts_with("pg_temp")));
    if shadows {
        out.push(Finding {
            code: "search_path_shadows_catalog",
            reason: "the search path puts a schema before pg_catalog, so its functions are                      found before the built-in ones of the same name; put pg_catalog first or                      leave it out"
                .to_owned(),
        });
    }
}

/// The finding of a SET that switches the client character set to one Airlock does not
/// know reads text as it does (a name it cannot read included): see [`super::encoding`].
pub(super) fn encoding_findings(set: &Set, out: &mut Vec<Finding>) {
    for target in client_encodings(set) {
        out.extend(encoding_finding(target.as_deref()));
    }
}

/// The finding of a switch of the client's character set to `target` (`None`: a value that
/// is not a name), unless Airlock knows it reads text as Airlock does.
pub(super) fn encoding_finding(target: Option<&str>) -> Option<Finding> {
    if target.is_some_and(super::encoding::known_safe) {
        return None;
    }
    Some(Finding {
        code: "client_encoding",
        reason: format!(
            "switches the client character set to {}; Airlock reads statements as UTF-8 and \
             could be split otherwise by the server",
            target.unwrap_or("a value it cannot read")
        ),
    })
}

/// MySQL's `SET CHARACTER SET name` and `SET CHARSET name` (alone: not in a list with other
/// settings), which sqlparser does not read: `Some` with the character set it switches the
/// client to (`None` for DEFAULT, the server's own, which Airlock cannot see).
pub(super) fn mysql_character_set(tokens: &[TokenWithSpan]) -> Option<Option<String>> {
    let significant = super::split::significant(tokens);
    let word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    let value = match significant.as_slice() {
        [set, character, set2, value]
            if word(set, "set") && word(character, "character") && word(set2, "set") =>
        {
            value
        }
        [set, charset, value] if word(set, "set") && word(charset, "charset") => value,
        _ => return None,
    };
    match value {
        _ if word(value, "default") => Some(None),
        Token::Word(w) => Some(Some(w.value.clone())),
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Some(Some(s.clone())),
        _ => None,
    }
}

/// The character sets `set` switches the client to: `None` where the value is not a name.
fn client_encodings(set: &Set) -> Vec<Option<String>> {
    match set {
        Set::SetNames { charset_name, .. } => vec![Some(charset_name.value.clone())],
        Set::SetNamesDefault {} => vec![None],
        _ => values_of(set, &["client_encoding", "character_set_client"]),
    }
}

/// MySQL sql_mode parts that change where a string ends, or (PIPES_AS_CONCAT) what `||`
/// means, besides those of [`QUOTES_NAMES_MODES`]: under ANSI_QUOTES (and the modes that
/// include it) `"..."` is a quoted name in which a backslash does not escape the closing
/// `"`, so `SELECT 1 AS "a\" ; DROP TABLE t; -- "` is one SELECT to Airlock and a SELECT then
/// a DROP to the server; under NO_BACKSLASH_ESCAPES no backslash escapes. The guard follows
/// the latter from the server's status flags, but a statement sent before the SET's answer
/// would be read the old way.
const STRING_CHANGING_MODES: &[&str] = &[
    "NO_BACKSLASH_ESCAPES",
    // Not about strings, but about how Airlock reads the text too: `||` becomes
    // concatenation, where Airlock reads MySQL's OR.
    "PIPES_AS_CONCAT",
];

/// MySQL sql_mode parts under which `"..."` is a quoted name: ANSI_QUOTES and the
/// combination modes that include it.
const QUOTES_NAMES_MODES: &[&str] = &[
    "ANSI_QUOTES",
    "ANSI",
    "DB2",
    "MAXDB",
    "MSSQL",
    "ORACLE",
    "POSTGRESQL",
];

/// Whether MySQL's sql_mode `mode` (as `@@sql_mode` gives it: parts separated by commas)
/// makes `"..."` a quoted name, in which a backslash is an ordinary character: where Airlock
/// reads a string in which `\"` does not end it, the server then ends the name there, so text
/// holding a backslash may split where Airlock does not.
pub fn mysql_mode_quotes_names(mode: &str) -> bool {
    mode.split(',').any(|part| {
        QUOTES_NAMES_MODES
            .iter()
            .any(|m| part.trim().eq_ignore_ascii_case(m))
    })
}

/// Whether MySQL statement `text`, classified with the `string_syntax_change` finding, may
/// make `"..."` a quoted name: a SET of sql_mode to a value [`mysql_mode_quotes_names`] says
/// does it, or to one Airlock cannot read. Anything else Airlock cannot read as a SET: true.
/// (The other modes of that finding, NO_BACKSLASH_ESCAPES and PIPES_AS_CONCAT, do not: the
/// server's status flags tell the first, and the second changes no statement boundary.)
pub fn mysql_set_may_quote_names(text: &str) -> bool {
    let parsed = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, text);
    match parsed.as_deref() {
        Ok([sqlparser::ast::Statement::Set(set)]) => values_of(set, &["sql_mode"])
            .iter()
            .any(|mode| mode.as_deref().is_none_or(mysql_mode_quotes_names)),
        _ => true,
    }
}

/// The finding of a SET of MySQL's sql_mode that may change how the server reads text (see
/// [`STRING_CHANGING_MODES`]), or whose value Airlock cannot read.
pub(super) fn sql_mode_findings(set: &Set, out: &mut Vec<Finding>) {
    for mode in values_of(set, &["sql_mode"]) {
        let changes_strings = mode.as_deref().is_none_or(|m| {
            let m = m.to_ascii_uppercase();
            (QUOTES_NAMES_MODES.iter())
                .chain(STRING_CHANGING_MODES)
                .any(|q| m.contains(q))
        });
        if changes_strings {
            out.push(Finding {
                code: "string_syntax_change",
                reason: format!(
                    "sql_mode {} may change how the server reads text (ANSI_QUOTES makes \
                     \"...\" a quoted name; NO_BACKSLASH_ESCAPES stops backslash escapes; \
                     PIPES_AS_CONCAT makes || concatenation), so the server may split or read \
                     it where Airlock does not",
                    mode.as_deref()
                        .unwrap_or("set to a value Airlock cannot read")
                ),
            });
        }
    }
}

/// The values `set` assigns to any of `settings`: `None` where a value is not a literal.
fn values_of(set: &Set, settings: &[&str]) -> Vec<Option<String>> {
    let wanted = |name: &ObjectName| settings.contains(&named(name, false).name.as_str());
    let literal = |value: &Expr| match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        // A name (utf8mb4, DEFAULT), not a user variable (`@saved`), whose value is unseen.
        Expr::Identifier(id) if !id.value.starts_with('@') => Some(id.value.clone()),
        _ => None,
    };
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } if wanted(variable) => match values.as_slice() {
            [value] => vec![literal(value)],
            _ => vec![None],
        },
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .filter(|a| wanted(&a.name))
            .map(|a| literal(&a.value))
            .collect(),
        _ => Vec::new(),
    }
}

fn is_record_setting(name: &str) -> bool {
    RECORD_SETTINGS.contains(&name) || RECORD_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What `set` assigns. In MySQL a scope keyword holds for the assignments after it until the
/// next one (`SET GLOBAL a = 1, b = 2` sets both globally).
fn assigned(set: &Set) -> Vec<Assigned> {
    let mut global = false;
    let mut one = |scope: &Option<ContextModifier>, name: &ObjectName| {
        if let Some(scope) = scope {
            global = matches!(scope, ContextModifier::Global);
        }
        named(name, global)
    };
    match set {
        Set::SingleAssignment {
            scope, variable, ..
        } => vec![one(scope, variable)],
        Set::MultipleAssignments { assignments } => {
            assignments.iter().map(|a| one(&a.scope, &a.name)).collect()
        }
        Set::ParenthesizedAssignments { variables, .. } => {
            variables.iter().map(|v| named(v, false)).collect()
        }
        _ => Vec::new(),
    }
}

/// A setting's name, with the scope an `@@global.` / `@@persist.` prefix gives it.
fn named(name: &ObjectName, global: bool) -> Assigned {
    // Quotes do not change which setting it is (`SET "role" TO ...`).
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map_or_else(|| p.to_string(), |i| i.value.clone())
        })
        .collect();
    let full = parts.join(".").to_ascii_lowercase();
    let text = full.trim_start_matches('@');
    for (prefix, is_global) in [
        ("global.", true),
        ("persist.", true),
        ("persist_only.", true),
        ("session.", false),
        ("local.", false),
    ] {
        if let Some(rest) = text.strip_prefix(prefix)
            && full.starts_with("@@")
        {
            return Assigned {
                name: rest.to_owned(),
                global: is_global,
            };
        }
    }
    Assigned {
        name: text.to_owned(),
        global,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Dialect;
    use super::super::classify::{Kind, classify};
    use super::mysql_mode_quotes_names;

    fn judged(sql: &str, dialect: Dialect) -> (Kind, Vec<&'static str>) {
        let c = classify(sql, dialect).remove(0);
        (c.kind, c.findings.iter().map(|f| f.code).collect())
    }

    #[test]
    fn superuser_settings_that_damage_data_or_load_code_administer_the_server() {
        for sql in [
            "SET zero_damaged_pages = on",
            "SET LOCAL ignore_checksum_failure TO on",
            "SET allow_system_table_mods = on",
            "SET dynamic_library_path = '/tmp'",
        ] {
            let found = judged(sql, Dialect::Postgres);
            assert_eq!(found, (Kind::Admin, vec!["superuser_setting"]), "{sql}");
        }
        let hidden = judged("SET track_activities = off", Dialect::Postgres);
        assert_eq!(hidden, (Kind::Admin, vec!["record_setting"]));
    }

    #[test]
    fn a_search_path_that_puts_a_schema_before_pg_catalog_is_a_finding() {
        let pg = Dialect::Postgres;
        for sql in [
            "SET search_path = app, pg_catalog",
            "SET LOCAL search_path TO app, PG_CATALOG, public",
            "set search_path = 'app', 'pg_catalog'",
            "SET SESSION search_path = \"$user\", pg_catalog",
        ] {
            let shadowed = (Kind::Session, vec!["search_path_shadows_catalog"]);
            assert_eq!(judged(sql, pg), shadowed, "{sql}");
        }
        for sql in [
            "SET search_path = app, public",
            "SET search_path TO pg_catalog, app",
            "SET search_path = pg_temp, pg_catalog, app",
            "SET search_path = app, \"PG_CATALOG\"",
            "SET search_path TO DEFAULT",
        ] {
            assert_eq!(judged(sql, pg), (Kind::Session, vec![]), "{sql}");
        }
    }

    #[test]
    fn global_settings_administer_the_server() {
        let my = Dialect::MySql;
        for sql in [
            "SET GLOBAL max_connections = 10",
            "SET @@global.read_only = 0",
            "SET @@GLOBAL.read_only = 0",
            "SET @@persist.max_connections = 10",
            "SET sql_mode = '', GLOBAL max_connections = 10",
        ] {
            assert_eq!(
                judged(sql, my),
                (Kind::Admin, vec!["global_setting"]),
                "{sql}"
            );
        }
        // The scope carries on to the assignments after it.
        let (kind, findings) = judged("SET GLOBAL a = 1, b = 2", my);
        assert_eq!((kind, findings.len()), (Kind::Admin, 2));
        assert_eq!(
            judged("SET SESSION a = 1, b = 2", my),
            (Kind::Session, vec![])
        );
        assert_eq!(
            judged("SET @@session.sql_mode = ''", my),
            (Kind::Session, vec![])
        );
        assert_eq!(judged("SET @x = 1", my), (Kind::Session, vec![]));
    }

    #[test]
    fn switching_off_the_databases_own_record_is_not_a_session_matter() {
        for (sql, dialect) in [
            ("SET session_replication_role = replica", Dialect::Postgres),
            ("SET LOCAL log_statement = 'none'", Dialect::Postgres),
            ("SET pgaudit.log = 'none'", Dialect::Postgres),
            ("SET sql_log_bin = 0", Dialect::MySql),
            ("SET SESSION sql_log_off = 1", Dialect::MySql),
            ("SET @@session.sql_log_bin = 0", Dialect::MySql),
        ] {
            assert_eq!(
                judged(sql, dialect),
                (Kind::Admin, vec!["record_setting"]),
                "{sql}"
            );
        }
        assert_eq!(
            judged("SET statement_timeout = 0", Dialect::Postgres),
            (Kind::Session, vec![])
        );
    }

    #[test]
    fn switching_to_a_character_set_that_splits_ascii_is_a_finding() {
        for (sql, dialect) in [
            ("SET client_encoding TO 'SJIS'", Dialect::Postgres),
            ("SET NAMES 'BIG5'", Dialect::Postgres),
            ("SET client_encoding = DEFAULT", Dialect::Postgres),
            ("SET NAMES gbk", Dialect::MySql),
            ("SET character_set_client = cp932", Dialect::MySql),
            (
                "SET sql_mode = '', character_set_client = sjis",
                Dialect::MySql,
            ),
            ("SET CHARACTER SET gbk", Dialect::MySql),
            ("set charset 'big5';", Dialect::MySql),
            ("SET CHARACTER SET DEFAULT", Dialect::MySql),
        ] {
            assert_eq!(
                judged(sql, dialect),
                (Kind::Session, vec!["client_encoding"]),
                "{sql}"
            );
        }
        for (sql, dialect) in [
            ("SET client_encoding TO 'UTF8'", Dialect::Postgres),
            ("SET NAMES utf8mb4", Dialect::MySql),
            ("SET NAMES latin1", Dialect::MySql),
            ("SET CHARACTER SET utf8", Dialect::MySql),
            ("SET /* x */ CHARSET \"utf8mb4\"", Dialect::MySql),
        ] {
            assert_eq!(judged(sql, dialect), (Kind::Session, vec![]), "{sql}");
        }
        // Only alone, and only in MySQL: the rest is what the parser makes of it.
        for (sql, dialect) in [
            ("SET CHARACTER SET utf8, @x = 1", Dialect::MySql),
            ("SET CHARACTER SET", Dialect::MySql),
            ("SET `CHARSET` utf8", Dialect::MySql),
            ("SET CHARACTER SET utf8", Dialect::Postgres),
        ] {
            assert_eq!(judged(sql, dialect).0, Kind::Unknown, "{sql}");
        }
    }

    #[test]
    fn the_modes_that_make_double_quotes_names_are_read_off_sql_mode() {
        for mode in [
            "ANSI_QUOTES",
            "STRICT_TRANS_TABLES,ansi_quotes",
            "REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI",
            "ORACLE",
            " postgresql ",
        ] {
            assert!(mysql_mode_quotes_names(mode), "{mode}");
        }
        for mode in [
            "",
            "STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION",
            "PIPES_AS_CONCAT",
            "NO_BACKSLASH_ESCAPES",
            "ANSI_QUOTESX",
        ] {
            assert!(!mysql_mode_quotes_names(mode), "{mode}");
        }
    }

    #[test]
    fn a_set_of_sql_mode_may_make_double_quotes_names_unless_it_says_otherwise() {
        use super::mysql_set_may_quote_names as may;
        for sql in [
            "SET SESSION sql_mode = 'ANSI_QUOTES'",
            "SET sql_mode = 'ansi', autocommit = 1",
            "SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",
            "SET sql_mode = @saved",
            // MariaDB takes the modes as a bit mask too: 4 is ANSI_QUOTES.
            "SET sql_mode = 4",
            "not a set at all",
        ] {
            assert!(may(sql), "{sql}");
        }
        for sql in [
            "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'",
            "SET sql_mode = 'PIPES_AS_CONCAT,STRICT_ALL_TABLES'",
            "SET sql_mode = DEFAULT",
        ] {
            assert!(!may(sql), "{sql}");
        }
    }

    #[test]
    fn an_sql_mode_that_makes_double_quotes_names_is_a_string_syntax_change() {
        let my = Dialect::MySql;
        for sql in [
            "SET SESSION sql_mode = 'ANSI_QUOTES'",
            "SET sql_mode = 'ansi'",
            "SET @@sql_mode = 'TRADITIONAL,ORACLE'",
            "SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",
            "SET sql_mode = @saved",
            "SET autocommit = 1, sql_mode = 'POSTGRESQL'",
            "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'",
        ] {
            assert_eq!(
                judged(sql, my),
                (Kind::Session, vec!["string_syntax_change"]),
                "{sql}"
            );
        }
        for sql in [
            "SET sql_mode = 'STRICT_TRANS_TABLES'",
            "SET SESSION sql_mode = 'TRADITIONAL,NO_ZERO_DATE'",
        ] {
            assert_eq!(judged(sql, my), (Kind::Session, vec![]), "{sql}");
        }
    }

    #[test]
    fn who_the_session_is_is_a_privilege_matter() {
        for (sql, dialect) in [
            ("SET PASSWORD = 'x'", Dialect::MySql),
            ("SET role = 'postgres'", Dialect::Postgres),
            (
                "SET LOCAL session_authorization = 'postgres'",
                Dialect::Postgres,
            ),
        ] {
            assert_eq!(judged(sql, dialect).0, Kind::Privilege, "{sql}");
        }
    }

    #[test]
    fn mysql_reset_is_of_the_server_and_select_into_a_variable_is_a_read() {
        let my = Dialect::MySql;
        assert_eq!(judged("RESET MASTER", my).0, Kind::Admin);
        assert_eq!(judged("SELECT 1 INTO @x", my), (Kind::Read, vec![]));
        assert_eq!(
            judged("RESET search_path", Dialect::Postgres),
            (Kind::Session, vec![])
        );
    }
}
