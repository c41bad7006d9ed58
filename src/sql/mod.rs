//! Statement text in, facts about it out. Pure: no I/O.
//!
//! Splitting a multi-statement string the way the server does ([`split`]), the classifier
//! ([`classify`]: kind, tables, risk findings, fail-closed unknowns) and its cache ([`cache`],
//! keyed by [`shape`]); the guard applies policy to what they say.

pub mod cache;
pub mod classify;
mod condition;
pub mod encoding;
pub mod functions;
mod mysql_prepare;
mod relations;
mod settings;
pub use settings::{mysql_mode_quotes_names, mysql_set_may_quote_names};
pub mod shape;
pub mod split;

/// Which server's lexical rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Postgres,
    /// MySQL and MariaDB: `#` and `-- ` comments, backslash escapes in strings, backquoted
    /// names, `/*! ... */` comments that the server executes.
    MySql,
}

impl Dialect {
    /// The dialect a listener speaks, by its name in policy files (`mysql`, else PostgreSQL).
    pub fn of_listener(listener: &str) -> Dialect {
        if listener.eq_ignore_ascii_case("mysql") {
            Dialect::MySql
        } else {
            Dialect::Postgres
        }
    }
}
