//! Policy: plain data (rules parsed from the TOML files in the policy directory) and a pure
//! function from (policy, who, where, classified statement) to a decision. Decisions are
//! values, not errors. Nothing here reads files: callers pass the files' text.
//!
//! Precedence: files in name order, rules in file order; the first rule whose conditions all
//! hold decides a statement; a statement no rule matches gets the policy's default. For a
//! string of several statements the most restrictive decision wins (deny over review over
//! allow).

pub mod cases;
pub mod check;
pub mod explain;
pub mod mask;
pub mod rules;

pub use check::{Decision, Request, check};
pub use rules::{Action, Policy, PolicyError, Rule};

/// The shipped `policies/default.toml`: the built-in policy when the config names no policy
/// directory.
pub const SHIPPED_DEFAULT: &str = include_str!("../../policies/default.toml");

/// [`SHIPPED_DEFAULT`] as the one file of a policy, as [`Policy::parse`] takes files.
pub fn shipped_default() -> Vec<(String, String)> {
    vec![("default.toml".to_owned(), SHIPPED_DEFAULT.to_owned())]
}
