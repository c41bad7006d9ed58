//! Airlock: a database access gateway. A wire-protocol proxy that relays PostgreSQL traffic
//! faithfully while every statement passes one inspection seam.
//!
//! Layers, from pure to I/O: [`protocol`], [`auth`], [`sql`] (classification) and [`policy`]
//! (no sockets), [`inspect`] (the seam) and [`guard`] (the inspector that judges statements
//! by the policy), [`approval`] (statements held until an approver decides, kept in the
//! embedded store), [`net`] and [`session`] (the only code that owns sockets), [`admin`] (the
//! HTTP API) and [`app`] (wiring).

pub mod admin;
pub mod app;
pub mod approval;
pub mod audit;
pub mod auth;
pub mod config;
pub mod guard;
pub mod hex;
pub mod inspect;
pub mod mask;
pub mod net;
pub mod policy;
pub mod protocol;
pub mod session;
pub mod sql;
pub mod utf8;
