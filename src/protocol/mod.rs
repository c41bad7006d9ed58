//! Wire-protocol codecs. Pure: bytes in, typed values out; no sockets, no clock, no tokio.

pub mod mysql;
pub mod pg;
