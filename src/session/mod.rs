//! Sessions: the only code, with `net`, that owns sockets. A session reads a message, asks the
//! pure layers what to do, and writes to the peer.

pub mod cancel;
pub mod hold;
pub mod mysql;
pub mod pg;
pub mod target;
