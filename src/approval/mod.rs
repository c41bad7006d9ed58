//! The approval queue: a statement a policy `review` rule holds becomes a ticket, the
//! client's session waits in place, and only an approver's decision (or the rule's timeout)
//! ends the wait. [`ticket`] is the pure model and its rules, [`store`] keeps tickets
//! (SQLite), [`hub`] connects waiting sessions with approvers.

pub mod hub;
pub mod notify;
pub mod store;
pub mod ticket;

pub use hub::{Approvals, Held, Outcome};
