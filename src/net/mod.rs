//! Sockets: the byte streams sessions own, TLS set-up on both legs, and the accept loop.

pub mod listener;
pub mod stream;
pub mod tls;
