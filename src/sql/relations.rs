//! Relations a statement names that sqlparser's visitor does not report as relations: what a
//! DROP drops, what a COPY reads or fills, what a GRANT or COMMENT is about, the table a
//! trigger watches, what VACUUM works on, and the new name of a renamed table or index.
//! Pure.
//!
//! Listing more names is always the safe direction for the policy: a rule that denies or
//! reviews matches if any name matches, and one that allows covers a statement only if every
//! name matches.

use sqlparser::ast::{
    AlterIndexOperation, AlterTableOperation, CommentObject, CopySource, GrantObjects, ObjectName,
    ObjectType, RenameTableNameKind, Statement,
};

use super::Dialect;

/// Appends to `out` the relations `statement` names that the visitor does not report.
pub(super) fn unreported(statement: &Statement, dialect: Dialect, out: &mut Vec<String>) {
    use Statement as S;
    let mut add = |name: &ObjectName| out.push(name.to_string());
    match statement {
        S::Drop {
            object_type,
            names,
            table,
            ..
        } => {
            if matches!(
                object_type,
                ObjectType::Table
                    | ObjectType::View
                    | ObjectType::MaterializedView
                    | ObjectType::Index
                    | ObjectType::Sequence
            ) {
                names.iter().for_each(&mut add);
            }
            table.iter().for_each(&mut add);
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
                    out.push(renamed(&alter.name, new, dialect));
                }
            }
        }
        S::AlterIndex {
            name,
            operation: AlterIndexOperation::RenameIndex { index_name },
        } => {
            add(name);
            out.push(renamed(name, index_name, dialect));
        }
        S::Grant(grant) => granted(grant.objects.as_ref(), out),
        S::Revoke(revoke) => granted(revoke.objects.as_ref(), out),
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
        S::Vacuum(vacuum) => vacuum.table_name.iter().for_each(&mut add),
        _ => {}
    }
}

/// The tables and sequences a GRANT or REVOKE is on.
fn granted(objects: Option<&GrantObjects>, out: &mut Vec<String>) {
    if let Some(
        GrantObjects::Tables(names) | GrantObjects::Views(names) | GrantObjects::Sequences(names),
    ) = objects
    {
        out.extend(names.iter().map(ToString::to_string));
    }
}

/// The name a relation `old` takes when renamed to `new`. In PostgreSQL a rename keeps the
/// schema, so an unqualified new name is in the old one's schema; in MySQL an unqualified new
/// name is in the session's default database, and a qualified one may be in another.
fn renamed(old: &ObjectName, new: &ObjectName, dialect: Dialect) -> String {
    match (dialect, old.0.split_last(), new.0.as_slice()) {
        (Dialect::Postgres, Some((_, schema)), [_]) if !schema.is_empty() => {
            ObjectName([schema, &new.0[..]].concat()).to_string()
        }
        _ => new.to_string(),
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
