//! The PostgreSQL frontend/backend protocol, version 3
//! (<https://www.postgresql.org/docs/current/protocol.html>): frame splitting on tag and length,
//! bounds-checked views of the frontend messages Airlock reads, and the few backend messages it
//! writes itself. Everything else passes through as the bytes it arrived as.

pub mod backend;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use error::{PgError, SqlState};

/// A prepared statement's or portal's name as the client sent it: names as drivers make them
/// ("", "P0_1", "s42", "__asyncpg_stmt_1__") are kept inline, without an allocation.
pub type Name = smallvec::SmallVec<[u8; 24]>;
pub use frame::{FrameError, Header};
