//! Whether a WHERE (or MERGE ... ON) condition can leave any row out. Pure.
//!
//! A condition that mentions no column (`WHERE 1=1`, `WHERE $1`) selects every row or none;
//! so does one that is true for every row by its shape: a branch of an OR that is
//! (`WHERE id = 5 OR 1=1`, the classic injected tautology), or a column compared with itself
//! (`WHERE id = id`, every row whose id is not null). Anything else that mentions a column is
//! taken to limit the rows: what the values select is the database's to know.

use std::ops::ControlFlow;

use sqlparser::ast::{BinaryOperator, Expr, Value};

/// Whether `condition` may leave rows out (see the module).
pub(super) fn limits_rows(condition: &Expr) -> bool {
    use BinaryOperator as Op;
    match condition {
        Expr::Nested(inner) | Expr::IsTrue(inner) | Expr::IsNotFalse(inner) => limits_rows(inner),
        Expr::BinaryOp {
            left,
            op: Op::And,
            right,
        } => limits_rows(left) || limits_rows(right),
        Expr::BinaryOp {
            left,
            op: Op::Or,
            right,
        } => limits_rows(left) && limits_rows(right),
        Expr::BinaryOp {
            left,
            op: Op::Eq | Op::GtEq | Op::LtEq | Op::Spaceship,
            right,
        } if same(left, right) => false,
        Expr::IsNotDistinctFrom(left, right) if same(left, right) => false,
        _ => mentions_a_column(condition),
    }
}

/// The same expression on both sides (names in any case, as unquoted names are folded),
/// whatever the literal values in it: `id + 1 = id + 2` counts as the same too, so that the
/// answer is one for every statement of a shape (the classification cache keys statements by
/// their shape, with literal values left out).
fn same(left: &Expr, right: &Expr) -> bool {
    without_values(left).eq_ignore_ascii_case(&without_values(right))
}

/// `expr` as text, with every literal value replaced by `?`.
fn without_values(expr: &Expr) -> String {
    let mut expr = expr.clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut expr, |e| {
        if let Expr::Value(v) = e {
            v.value = Value::Placeholder("?".to_owned());
        }
        ControlFlow::<()>::Continue(())
    });
    expr.to_string()
}

/// Whether an expression mentions any column.
pub(super) fn mentions_a_column(expr: &Expr) -> bool {
    sqlparser::ast::visit_expressions(expr, |e| match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

#[cfg(test)]
mod tests {
    use super::super::Dialect;
    use super::super::classify::classify;

    fn wipes(sql: &str) -> bool {
        let c = classify(sql, Dialect::Postgres);
        c.iter()
            .any(|c| c.has("delete_without_where") || c.has("update_without_where"))
    }

    #[test]
    fn a_condition_true_for_every_row_does_not_limit_it() {
        for sql in [
            "delete from t",
            "delete from t where 1 = 1",
            "delete from t where id = 5 or 1 = 1",
            "delete from t where (id = 5) or (true)",
            "delete from t where id = id",
            "delete from t where ID = id",
            "delete from t where (a.b >= a.b)",
            "update t set x = 1 where x is not distinct from x",
            "update t set x = 1 where id = 1 or id = id",
            "delete from t where not false",
            "delete from t where $1 or id = 2",
            "delete from t where (1 = 1 or id = 1) is true",
            "delete from t where (id = id) is not false",
            // Alike but for literal values: one answer for the shape, the careful one.
            "delete from t where id + 1 = id + 1",
            "delete from t where id + 1 = id + 2",
            "delete from t where id + $1 = id + 1",
        ] {
            assert!(wipes(sql), "{sql}");
        }
    }

    #[test]
    fn a_condition_on_a_column_limits_the_rows() {
        for sql in [
            "delete from t where id = 5",
            "delete from t where 1 = 1 and id = 5",
            "delete from t where id = 5 or id = 6",
            "delete from t where deleted_at is not null",
            "delete from t where id <> id",
            "delete from t where id in (select id from u)",
            "update t set x = 1 where a = b",
            "update t set x = 1 where not (id = 5)",
        ] {
            assert!(!wipes(sql), "{sql}");
        }
    }
}
