//! Airlock: a database access gateway. A wire-protocol proxy that relays PostgreSQL traffic
//! faithfully while every statement passes one inspection seam.
//!
//! Layers, from pure to I/O: [`protocol`] and [`auth`] (no sockets), [`inspect`] (the seam),
//! [`net`] and [`session`] (the only code that owns sockets), and [`app`] (wiring).

pub mod app;
pub mod auth;
pub mod config;
pub mod inspect;
pub mod net;
pub mod policy;
pub mod protocol;
pub mod session;
pub mod sql;
