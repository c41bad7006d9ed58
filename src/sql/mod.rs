//! Statement text in, facts about it out. Pure: no I/O.
//!
//! So far: splitting a multi-statement string the way the server does. Classification and
//! findings build on it.

pub mod split;

/// Which server's lexical rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
}
