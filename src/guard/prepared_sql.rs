//! What each of a MySQL session's SQL-level prepared statement names (PREPARE ... FROM) may
//! hold. The guard sees a PREPARE before the server runs it, and the server may not run it
//! (the string it is in was refused, or another statement before it failed). So a name keeps
//! every statement it may hold, and an EXECUTE is judged as the strictest of them; a
//! DEALLOCATE forgets the name, after which an EXECUTE of it is unknown. Either way nothing
//! runs under a milder judgement than its own. Pure.

use std::collections::HashMap;

use crate::sql::classify::{Classified, PreparedStatements};

/// Names remembered, and statements per name; past either, a name holds one unknown.
const MAX_NAMES: usize = 1000;
const MAX_CANDIDATES: usize = 8;

#[derive(Default)]
pub struct SqlPrepared {
    names: HashMap<String, Vec<Classified>, foldhash::fast::RandomState>,
}

impl PreparedStatements for SqlPrepared {
    fn lookup(&self, name: &str) -> Vec<Classified> {
        self.names.get(name).cloned().unwrap_or_default()
    }

    fn prepare(&mut self, name: String, statement: Classified) {
        if self.names.len() >= MAX_NAMES && !self.names.contains_key(&name) {
            return;
        }
        let held = self.names.entry(name).or_default();
        if held.contains(&statement) {
            return;
        }
        if held.len() < MAX_CANDIDATES {
            held.push(statement);
        } else {
            let reason = "this prepared statement name was prepared with too many different \
                          statements for Airlock to keep track of"
                .to_owned();
            *held = vec![Classified::unknown(
                "",
                "unknown_prepared_statement",
                reason,
            )];
        }
    }

    fn deallocate(&mut self, name: Option<&str>) {
        match name {
            Some(name) => {
                self.names.remove(name);
            }
            None => self.names.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Dialect;
    use crate::sql::classify::{Kind, classify_in_session};

    #[test]
    fn a_name_keeps_every_statement_it_may_hold() {
        let mut p = SqlPrepared::default();
        let mut run = |sql: &str| classify_in_session(sql, Dialect::MySql, &mut p);
        run("PREPARE s FROM 'DELETE FROM t'");
        run("PREPARE s FROM 'SELECT 1'");
        let kinds: Vec<Kind> = p.lookup("s").iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Write, Kind::Read],
            "the first may still be what it holds"
        );
        let mut run = |sql: &str| classify_in_session(sql, Dialect::MySql, &mut p);
        run("DEALLOCATE PREPARE s");
        assert!(p.lookup("s").is_empty());
    }
}
