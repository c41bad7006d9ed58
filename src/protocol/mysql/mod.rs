//! The MySQL/MariaDB client/server protocol
//! (<https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html>): packet framing with
//! sequence ids and 16 MiB splitting, the commands Airlock reads, and the ERR packets it writes
//! itself. The handshake packets are mysql_common's. Everything else passes through as the
//! bytes it arrived as.

pub mod command;
pub mod error;
pub mod packet;
pub mod response;

pub use error::MyError;
