//! What needs a MariaDB of its own, set up as the shared one on 127.0.0.1:3306 is not: Airlock's
//! own login over TLS (the shared one has no TLS), and a server whose sql_mode reads text
//! otherwise than the shared one. Each test starts a private `mariadbd` on a free loopback
//! port, with a certificate made in the test and an account that can only log in over TLS
//! (`REQUIRE SSL`), and stops it at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mysql::{code, message, opts};
use common::{Certs, Proxy, Setup, allow_all};
use mysql_async::prelude::*;

const ACCOUNT: &str = "airlock_tls";
const ACCOUNT_PASSWORD: &str = "upstream-password-for-tests";

/// A MariaDB server of the test's own, killed when dropped.
struct PrivateMariadb {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateMariadb {
    /// A server with `options` besides the test's own (`--sql-mode=...`).
    fn start(certs: &Certs, options: &[&str]) -> PrivateMariadb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let user = whoami();
        let install = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("mariadb-install-db must be installed (mariadb-server)");
        assert!(
            install.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        let init = dir.path().join("init.sql");
        std::fs::write(
            &init,
            format!(
                "CREATE DATABASE test;\n\
                 CREATE USER '{ACCOUNT}'@'%' IDENTIFIED BY '{ACCOUNT_PASSWORD}' REQUIRE SSL;\n\
                 GRANT ALL ON test.* TO '{ACCOUNT}'@'%';\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .args(["--bind-address=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--socket={}", path("mysqld.sock")))
            .arg(format!("--pid-file={}", path("mysqld.pid")))
            .arg(format!("--log-error={}", path("error.log")))
            .arg(format!("--init-file={}", init.display()))
            .arg(format!("--ssl-cert={}", certs.cert_file().display()))
            .arg(format!("--ssl-key={}", certs.key_file().display()))
            .arg(format!("--ssl-ca={}", certs.ca_file().display()))
            .args(["--skip-log-bin", "--innodb-buffer-pool-size=16M"])
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/sbin/mariadbd must be installed (mariadb-server)");
        let server = PrivateMariadb { child, port, dir };
        server.wait_until_up();
        server
    }

    /// Runs `sql` in database test directly (not through Airlock), as the TLS-only account.
    fn run(&self, sql: &str) -> std::process::Output {
        Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "--protocol=tcp",
            ])
            .args(["-u", ACCOUNT, &format!("-p{ACCOUNT_PASSWORD}"), "--ssl"])
            .args(["-N", "-e", sql, "test"])
            .output()
            .expect("the mariadb client must be installed (mariadb-client)")
    }

    /// Bounded: the server answers a login over TLS within 30 seconds, or the test fails with
    /// its error log.
    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run("SELECT 1");
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("error.log"));
                panic!(
                    "the private MariaDB did not come up: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    log.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Airlock in front of `address`, logging in as the TLS-only account with `tls` settings.
async fn proxy(address: &str, tls: &str, password_file: &Path) -> Proxy {
    Setup {
        mysql: true,
        policy_dir: allow_all(),
        mysql_upstream: format!(
            "address = \"{address}\"\nuser = \"{ACCOUNT}\"\npassword_file = {:?}\n{tls}\n",
            password_file.display().to_string()
        ),
        ..Setup::default()
    }
    .start()
    .await
}

/// Upstream TLS settings that verify the server's certificate against the CA of `certs`.
fn verified(certs: &Certs) -> String {
    format!(
        "tls = \"verify-full\"\nca_file = {:?}\nserver_name = \"localhost\"",
        certs.ca_file().display().to_string()
    )
}

fn password_file(dir: &Path) -> PathBuf {
    let file = dir.join("upstream-password");
    std::fs::write(&file, format!("{ACCOUNT_PASSWORD}\n")).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airlock_logs_in_to_mariadb_over_verified_tls() {
    let certs = Certs::new();
    let server = PrivateMariadb::start(&certs, &[]);
    let address = format!("127.0.0.1:{}", server.port);
    let secret = password_file(server.dir.path());

    // verify-full against the CA that signed the server's certificate: the client (plain TCP
    // to Airlock) works, and the database sees Airlock's session encrypted.
    let airlock = proxy(&address, &verified(&certs), &secret).await;
    let mut conn = mysql_async::Conn::new(opts(airlock.mysql_port.unwrap()))
        .await
        .expect("logs in through Airlock");
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await
        .unwrap();
    let version = cipher.map(|(_, v)| v).unwrap_or_default();
    assert!(version.starts_with("TLSv1."), "Ssl_version {version:?}");
    let who: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who, format!("{ACCOUNT}@%"));
    conn.disconnect().await.unwrap();

    // A CA that did not sign the certificate: refused, and the client is told why.
    let airlock = proxy(&address, &verified(&Certs::new()), &secret).await;
    let e = mysql_async::Conn::new(opts(airlock.mysql_port.unwrap()))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 2003, "{}", message(&e));
    assert!(message(&e).contains("certificate"), "{}", message(&e));

    // Without TLS the TLS-only account is refused by the database, and the client hears that
    // Airlock's own login was refused, without the password.
    let airlock = proxy(&address, "tls = \"disable\"", &secret).await;
    let e = mysql_async::Conn::new(opts(airlock.mysql_port.unwrap()))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1045, "{}", message(&e));
    assert!(
        message(&e).contains("Airlock's own login"),
        "{}",
        message(&e)
    );
    assert!(!message(&e).contains(ACCOUNT_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_of_a_database_without_it_is_a_clear_error() {
    // The shared MariaDB on 127.0.0.1:3306 offers no TLS.
    let dir = tempfile::tempdir().unwrap();
    let secret = password_file(dir.path());
    let airlock = proxy("127.0.0.1:3306", "tls = \"require\"", &secret).await;
    let e = mysql_async::Conn::new(opts(airlock.mysql_port.unwrap()))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 2003, "{}", message(&e));
    assert!(
        message(&e).contains("does not offer TLS and mysql.upstream.tls requires it"),
        "{}",
        message(&e)
    );
}

/// A server whose global sql_mode has ANSI_QUOTES reads `"a\"` as a name that ends at the
/// second quote, where Airlock's MySQL reading sees a string that goes on: `SELECT 1 AS "a\" ;
/// DROP TABLE t; -- "` is one SELECT to Airlock and a SELECT, then a DROP, to that server.
/// Airlock asks each session's sql_mode after login and, under ANSI_QUOTES, judges text holding
/// a backslash as unknown, whatever the status flags say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_sql_mode_makes_double_quotes_names_is_read_as_it_reads() {
    let certs = Certs::new();
    let server = PrivateMariadb::start(&certs, &["--sql-mode=ANSI_QUOTES"]);
    let address = format!("127.0.0.1:{}", server.port);
    let secret = password_file(server.dir.path());
    let airlock = Setup {
        mysql: true,
        policy_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")),
        mysql_upstream: format!(
            "address = \"{address}\"\nuser = \"{ACCOUNT}\"\npassword_file = {:?}\n{}\n",
            secret.display().to_string(),
            verified(&certs)
        ),
        ..Setup::default()
    }
    .start()
    .await;
    let mut conn = mysql_async::Conn::new(opts(airlock.mysql_port.unwrap()))
        .await
        .expect("logs in through Airlock");
    let mode: String = conn
        .query_first("SELECT @@sql_mode")
        .await
        .unwrap()
        .unwrap();
    assert!(mode.contains("ANSI_QUOTES"), "{mode}");
    let made = server.run("CREATE TABLE t (id INT)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // The server would run the DROP hidden behind the backslash: held by the default policy
    // (refused here, with no approvals store), and the table is still there.
    let e = conn
        .query_drop("SELECT 1 AS \"a\\\" ; DROP TABLE t; -- \"")
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert!(message(&e).contains("backslash"), "{}", message(&e));
    let n: i64 = conn
        .query_first("SELECT COUNT(*) FROM \"t\"")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "double-quoted names without a backslash are ordinary");
    conn.query_drop("DROP TABLE t")
        .await
        .expect_err("held like any DROP");
    conn.disconnect().await.unwrap();
}
