//! The names of the relations a statement names, as the database resolves them (quotes
//! removed, PostgreSQL's unquoted names folded to lower case), and the relations sqlparser's
//! visitor does not report as such: what a DROP drops, what a COPY reads or fills, what a
//! GRANT or COMMENT is about, the table a trigger watches (or watched), what VACUUM works on, and the new
//! name of a renamed table or index. A statement about every relation in a schema (MySQL: a
//! database), such as DROP SCHEMA, names them as `schema.*`; one about a relation Airlock
//! cannot tell (MySQL's DROP TRIGGER with a bare name: a trigger of some table in the
//! session's database) names `*`. Pure.
//!
//! Listing more names is always the safe direction for the policy: a rule that denies or
//! reviews matches if any name matches, and one that allows covers a statement only if every
//! name matches.

use sqlparser::ast::{
    AlterIndexOperation, AlterSchemaOperation, AlterTableOperation, CommentObject, CopySource,
    GrantObjects, ObjectName, ObjectNamePart, ObjectType, RenameTableNameKind, Statement,
};

use super::Dialect;

/// A relation's name as the database resolves it, part by part: `"Billing".invoices` is
/// `Billing.invoices`, and in PostgreSQL `Billing.Invoices` is `billing.invoices`. So a rule
/// for `billing.*` cannot be slipped past by quoting a name. A quoted part that holds a dot,
/// a quote or a glob character keeps its quotes, so that it cannot pass for two parts or a
/// pattern. A PostgreSQL name qualified with the database leaves it out.
pub(super) fn name(name: &ObjectName, dialect: Dialect) -> String {
    // PostgreSQL takes `database.schema.table` only for the session's own database: the
    // name is `schema.table`, as a rule for `billing.*` expects.
    let parts = match (dialect, name.0.as_slice()) {
        (Dialect::Postgres, [_database, rest @ ..]) if rest.len() == 2 => rest,
        (_, parts) => parts,
    };
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match part {
            ObjectNamePart::Identifier(id) => match id.quote_style {
                None if dialect == Dialect::Postgres => {
                    out.push_str(&id.value.to_ascii_lowercase())
                }
                None => out.push_str(&id.value),
                Some(_) if id.value.contains(['.', '"', '`', '*', '?']) => {
                    out.push_str(&id.to_string())
                }
                Some(_) => out.push_str(&id.value),
            },
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

/// MySQL: the database a qualified name (`prod.t`) names, as [`name`] gives it.
pub(super) fn database(relation: &ObjectName, dialect: Dialect) -> Option<String> {
    match (dialect, relation.0.as_slice()) {
        (Dialect::MySql, [db, _, ..]) => Some(name(&ObjectName(vec![db.clone()]), dialect)),
        _ => None,
    }
}

/// Catalogs that hold password hashes (or, for user mappings, a foreign server's password),
/// as [`name`] gives them.
const PG_CREDENTIAL_CATALOGS: &[&str] = &[
    "pg_authid",
    "pg_shadow",
    "pg_user_mapping",
    "pg_user_mappings",
];
const MYSQL_CREDENTIAL_CATALOGS: &[&str] =
    &["mysql.user", "mysql.global_priv", "mysql.password_history"];

/// Whether `table` (a name as [`name`] gives it) is a catalog that holds credentials.
pub(super) fn holds_credentials(table: &str, dialect: Dialect) -> bool {
    let table = table.to_ascii_lowercase();
    match dialect {
        Dialect::Postgres => {
            let bare = table.strip_prefix("pg_catalog.").unwrap_or(&table);
            PG_CREDENTIAL_CATALOGS.contains(&bare)
        }
        Dialect::MySql => MYSQL_CREDENTIAL_CATALOGS.contains(&table.as_str()),
    }
}

/// Appends to `out` the relations `statement` names that the visitor does not report.
pub(super) fn unreported(statement: &Statement, dialect: Dialect, out: &mut Vec<ObjectName>) {
    use Statement as S;
    let mut add = |n: &ObjectName| out.push(n.clone());
    match statement {
        S::Drop {
            object_type,
            names,
            table,
            ..
        } => {
            match object_type {
                ObjectType::Table
                | ObjectType::View
                | ObjectType::MaterializedView
                | ObjectType::Index
                | ObjectType::Sequence => names.iter().for_each(&mut add),
                // Everything in it goes too. (A PostgreSQL database is another database:
                // its tables are not named from this one.)
                ObjectType::Schema => names.iter().for_each(|n| add(&everything_in(n))),
                ObjectType::Database if dialect == Dialect::MySql => {
                    names.iter().for_each(|n| add(&everything_in(n)))
                }
                _ => {}
            }
            table.iter().for_each(&mut add);
        }
        // Every table in it changes its name.
        S::AlterSchema(alter) => {
            for op in &alter.operations {
                if let AlterSchemaOperation::Rename { name } = op {
                    add(&everything_in(&alter.name));
                    add(&everything_in(name));
                }
            }
        }
        S::Copy {
            source: CopySource::Table { table_name, .. },
            ..
        } => add(table_name),
        S::AlterTable(alter) => {
            for op in &alter.operations {
                if let AlterTableOperation::RenameTable {
                    table_name: RenameTableNameKind::To(new) | RenameTableNameKind::As(new),
                } = op
                {
                    add(&renamed(&alter.name, new, dialect));
                }
            }
        }
        S::AlterIndex {
            name,
            operation: AlterIndexOperation::RenameIndex { index_name },
        } => {
            add(name);
            add(&renamed(name, index_name, dialect));
        }
        S::Grant(grant) => granted(grant.objects.as_ref(), &mut add),
        S::Revoke(revoke) => granted(revoke.objects.as_ref(), &mut add),
        S::Comment {
            object_type,
            object_name,
            ..
        } => match object_type {
            CommentObject::Table
            | CommentObject::View
            | CommentObject::MaterializedView
            | CommentObject::ForeignTable
            | CommentObject::Index
            | CommentObject::Sequence => add(object_name),
            // table.column: the table.
            CommentObject::Column if object_name.0.len() > 1 => {
                let table = ObjectName(object_name.0[..object_name.0.len() - 1].to_vec());
                add(&table);
            }
            _ => {}
        },
        S::CreateTrigger(trigger) => add(&trigger.table_name),
        S::DropTrigger(trigger) => match (&trigger.table_name, trigger.trigger_name.0.as_slice()) {
            (Some(table), _) => add(table),
            // MySQL names a trigger by its table's database, not by the table.
            (None, [database, _]) if dialect == Dialect::MySql => {
                add(&everything_in(&ObjectName(vec![database.clone()])))
            }
            // Unqualified: a table of the session's database, which one unknown.
            (None, [_]) if dialect == Dialect::MySql => add(&everything_in(&ObjectName(vec![]))),
            _ => {}
        },
        S::Vacuum(vacuum) => vacuum.table_name.iter().for_each(&mut add),
        _ => {}
    }
}

/// The tables and sequences a GRANT or REVOKE is on.
fn granted(objects: Option<&GrantObjects>, add: &mut impl FnMut(&ObjectName)) {
    match objects {
        Some(
            GrantObjects::Tables(names)
            | GrantObjects::Views(names)
            | GrantObjects::Sequences(names),
        ) => names.iter().for_each(add),
        Some(
            GrantObjects::AllTablesInSchema { schemas }
            | GrantObjects::AllViewsInSchema { schemas }
            | GrantObjects::AllMaterializedViewsInSchema { schemas }
            | GrantObjects::AllSequencesInSchema { schemas },
        ) => schemas.iter().for_each(|s| add(&everything_in(s))),
        _ => {}
    }
}

/// Every relation in schema (MySQL: database) `schema`, as `schema.*`: a name no relation
/// has (a quoted `*` keeps its quotes), which a rule for a table in the schema matches (see
/// the policy's table conditions).
fn everything_in(schema: &ObjectName) -> ObjectName {
    let all = ObjectNamePart::Identifier(sqlparser::ast::Ident::new("*"));
    ObjectName([&schema.0[..], &[all]].concat())
}

/// The name a relation `old` takes when renamed to `new`. In PostgreSQL a rename keeps the
/// schema, so an unqualified new name is in the old one's schema; in MySQL an unqualified new
/// name is in the session's default database, and a qualified one may be in another.
fn renamed(old: &ObjectName, new: &ObjectName, dialect: Dialect) -> ObjectName {
    match (dialect, old.0.split_last(), new.0.as_slice()) {
        (Dialect::Postgres, Some((_, schema)), [_]) if !schema.is_empty() => {
            ObjectName([schema, &new.0[..]].concat())
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::classify::classify;
    use super::*;

    /// The tables `sql` names, sorted.
    fn tables(sql: &str, dialect: Dialect) -> Vec<String> {
        let mut c = classify(sql, dialect);
        assert_eq!(c.len(), 1, "{sql}");
        let mut tables = c.remove(0).tables;
        tables.sort();
        tables
    }

    #[test]
    fn statements_name_what_they_act_on() {
        let pg = Dialect::Postgres;
        for (sql, want) in [
            ("DROP TABLE prod.t, prod.u", &["prod.t", "prod.u"][..]),
            ("DROP VIEW IF EXISTS prod.v", &["prod.v"]),
            ("DROP INDEX prod.i", &["prod.i"]),
            ("DROP SEQUENCE prod.s", &["prod.s"]),
            ("COPY prod.t TO STDOUT", &["prod.t"]),
            ("COPY prod.t (a, b) FROM STDIN", &["prod.t"]),
            ("GRANT SELECT ON prod.t TO bob", &["prod.t"]),
            ("REVOKE ALL ON TABLE prod.t FROM bob", &["prod.t"]),
            ("COMMENT ON TABLE prod.t IS 'x'", &["prod.t"]),
            ("COMMENT ON COLUMN prod.t.c IS 'x'", &["prod.t"]),
            (
                "CREATE TRIGGER tr AFTER INSERT ON prod.t FOR EACH ROW EXECUTE FUNCTION f()",
                &["prod.t"],
            ),
            ("DROP TRIGGER tr ON prod.t", &["prod.t"]),
            ("DROP TRIGGER IF EXISTS tr", &[]),
            ("DROP SCHEMA prod CASCADE", &["prod.*"]),
            ("ALTER SCHEMA prod RENAME TO old", &["old.*", "prod.*"]),
            (
                "GRANT SELECT ON ALL TABLES IN SCHEMA prod TO bob",
                &["prod.*"],
            ),
            ("DELETE FROM test.prod.t WHERE id = 1", &["prod.t"]),
            ("VACUUM prod.t", &["prod.t"]),
            (
                "ALTER TABLE scratch.a RENAME TO b",
                &["scratch.a", "scratch.b"],
            ),
            ("ALTER TABLE a RENAME TO b", &["a", "b"]),
            (
                "ALTER INDEX scratch.i RENAME TO j",
                &["scratch.i", "scratch.j"],
            ),
        ] {
            assert_eq!(tables(sql, pg), want, "{sql}");
        }
    }

    #[test]
    fn names_are_as_the_database_resolves_them() {
        let pg = Dialect::Postgres;
        for (sql, want) in [
            (r#"DELETE FROM "billing_history""#, "billing_history"),
            (
                r#"DELETE FROM Public."billing_history""#,
                "public.billing_history",
            ),
            (r#"DELETE FROM "Billing".Invoices"#, "Billing.invoices"),
            (r#"SELECT * FROM "a.b""#, r#""a.b""#),
            (r#"SELECT * FROM "x*""#, r#""x*""#),
        ] {
            assert_eq!(tables(sql, pg), [want], "{sql}");
        }
        let my = Dialect::MySql;
        assert_eq!(tables("DELETE FROM `prod`.`T`", my), ["prod.T"]);
        assert_eq!(tables("DELETE FROM Prod.T", my), ["Prod.T"]);
        assert_eq!(tables("DROP TRIGGER prod.tr", my), ["prod.*"]);
        assert_eq!(tables("DROP DATABASE prod", my), ["prod.*"]);
        // Some table of the session's database: `*`, which every rule that denies or
        // reviews a table matches.
        assert_eq!(tables("DROP TRIGGER tr", my), ["*"]);
        assert_eq!(tables("DROP TRIGGER IF EXISTS tr", my), ["*"]);
    }

    #[test]
    fn reading_password_hashes_is_a_finding() {
        for (sql, dialect) in [
            (
                "SELECT rolname, rolpassword FROM pg_authid",
                Dialect::Postgres,
            ),
            ("SELECT * FROM pg_catalog.pg_shadow", Dialect::Postgres),
            (r#"SELECT * FROM "pg_user_mappings""#, Dialect::Postgres),
            (
                "SELECT authentication_string FROM mysql.user",
                Dialect::MySql,
            ),
            ("SELECT * FROM `mysql`.`global_priv`", Dialect::MySql),
        ] {
            let c = classify(sql, dialect).remove(0);
            assert!(c.has("credential_catalog"), "{sql}");
        }
        let roles = classify("SELECT rolname FROM pg_roles", Dialect::Postgres).remove(0);
        assert!(roles.findings.is_empty());
    }

    #[test]
    fn a_mysql_rename_may_move_a_table_to_another_database() {
        let my = Dialect::MySql;
        assert_eq!(
            tables("ALTER TABLE scratch.a RENAME TO prod.b", my),
            ["prod.b", "scratch.a"]
        );
        // Unqualified: the session's default database, not necessarily scratch.
        assert_eq!(
            tables("ALTER TABLE scratch.a RENAME TO b", my),
            ["b", "scratch.a"]
        );
        assert_eq!(tables("DROP TABLE prod.t", my), ["prod.t"]);
        assert_eq!(tables("DROP INDEX i ON prod.t", my), ["i", "prod.t"]);
    }
}
