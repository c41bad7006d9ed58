//! Credentials Airlock checks (clients logging in to Airlock). Pure: no sockets.

pub mod mysql;
pub mod scram;
