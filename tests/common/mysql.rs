//! MySQL clients for the tests: mysql_async through Airlock or straight to the MariaDB on
//! 127.0.0.1:3306, and the mariadb command-line client.

use std::process::Command;

use super::{PASSWORD, USER};

pub fn opts(port: u16) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(USER))
        .pass(Some(PASSWORD))
        .db_name(Some("test"))
        // Otherwise mysql_async asks for the server's socket and reconnects through it.
        .prefer_socket(false)
}

pub async fn connect(port: u16) -> mysql_async::Conn {
    mysql_async::Conn::new(opts(port))
        .await
        .expect("logs in through Airlock")
}

/// A direct connection to MariaDB, to set up and observe from the side.
pub async fn direct() -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some("root"))
        .db_name(Some("test"))
        .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .expect("MariaDB on 127.0.0.1:3306 (root, no password) must be running")
}

pub fn code(e: &mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("not a server error: {other}"),
    }
}

pub fn message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => s.message.clone(),
        other => other.to_string(),
    }
}

pub fn mariadb(port: u16, args: &[&str]) -> std::process::Output {
    Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", USER])
        .arg(format!("-p{PASSWORD}"))
        .args(["--protocol=tcp", "--batch", "test"])
        .args(args)
        .output()
        .expect("the mariadb client must be installed (mariadb-client)")
}
