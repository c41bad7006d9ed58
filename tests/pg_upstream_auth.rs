//! Airlock's own login to the database with each method PostgreSQL may ask for: SCRAM-SHA-256,
//! md5 and cleartext password. The suite's shared PostgreSQL trusts loopback, so this test runs
//! a second, throwaway PostgreSQL cluster (initdb as the postgres user) whose pg_hba.conf
//! demands passwords, and stops it afterwards.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Setup, sqlstate};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster in a temporary directory, stopped on drop.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser is available");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Cluster {
    fn start() -> Cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "airlock-upstream-auth-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .unwrap();
        let data = dir.join("data");
        let data_s = data.display().to_string();
        as_postgres(&[
            &format!("{BIN}/initdb"),
            "-D",
            &data_s,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        std::fs::write(
            data.join("pg_hba.conf"),
            "host all postgres 127.0.0.1/32 trust\n\
             host all scram_user 127.0.0.1/32 scram-sha-256\n\
             host all md5_user 127.0.0.1/32 md5\n\
             host all clear_user 127.0.0.1/32 password\n",
        )
        .unwrap();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            &data_s,
            "-o",
            &opts,
            "-w",
            "-t",
            "60",
            "-l",
            &format!("{}/log", dir.display()),
            "start",
        ]);
        let cluster = Cluster { dir, port };
        cluster.psql(
            "set password_encryption = 'scram-sha-256'; create role scram_user login password 'scram-pw';\
             set password_encryption = 'md5'; create role md5_user login password 'md5-pw';\
             create role clear_user login password 'clear-pw';",
        );
        cluster
    }

    fn psql(&self, sql: &str) {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{BIN}/pg_ctl"),
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup_for(cluster: &Cluster, user: &str, secret_source: &str) -> String {
    let setup = Setup {
        upstream_address: format!("127.0.0.1:{}", cluster.port),
        upstream_extra: format!("tls = \"disable\"\n{secret_source}\n"),
        ..Setup::default()
    };
    setup
        .config_text()
        .replace("user = \"postgres\"", &format!("user = \"{user}\""))
}

async fn login_as(config_text: &str) -> Result<String, tokio_postgres::Error> {
    let config = airlock::config::Config::parse(config_text).unwrap();
    let running = airlock::app::start(&config).await.unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=postgres",
        running.postgres_addr.unwrap().port(),
        common::USER,
        common::PASSWORD
    );
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = client.query_one("select current_user::text", &[]).await?;
    Ok(row.get(0))
}

fn write_secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airlock_logs_in_with_scram_md5_and_cleartext() {
    common::init_logging();
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let secrets = tempfile::tempdir().unwrap();

    // SCRAM-SHA-256 with the password from a file; the server's signature is checked too.
    let file = write_secret(secrets.path(), "scram", "scram-pw");
    let text = setup_for(
        &cluster,
        "scram_user",
        &format!("password_file = {:?}", file.display().to_string()),
    );
    assert_eq!(login_as(&text).await.unwrap(), "scram_user");

    // md5 with the password from an environment variable.
    // SAFETY: the variable is unique to this test and read only by Airlock's config loader.
    unsafe { std::env::set_var("AIRLOCK_TEST_MD5_PW", "md5-pw") };
    let text = setup_for(
        &cluster,
        "md5_user",
        "password_env = \"AIRLOCK_TEST_MD5_PW\"",
    );
    assert_eq!(login_as(&text).await.unwrap(), "md5_user");

    // Cleartext password.
    let file = write_secret(secrets.path(), "clear", "clear-pw");
    let text = setup_for(
        &cluster,
        "clear_user",
        &format!("password_file = {:?}", file.display().to_string()),
    );
    assert_eq!(login_as(&text).await.unwrap(), "clear_user");

    // A wrong upstream password is Airlock's problem, reported as such, without the password.
    let file = write_secret(secrets.path(), "wrong", "not-the-password");
    let text = setup_for(
        &cluster,
        "scram_user",
        &format!("password_file = {:?}", file.display().to_string()),
    );
    let e = login_as(&text)
        .await
        .expect_err("wrong upstream password is refused");
    assert_eq!(sqlstate(&e), "08004");
    let shown = common::text(&e);
    assert!(shown.contains("refused Airlock's own login"), "{shown}");
    assert!(!shown.contains("not-the-password"), "{shown}");

    // No password configured but the database asks for one.
    let text = setup_for(&cluster, "md5_user", "");
    let e = login_as(&text).await.err().unwrap();
    assert_eq!(sqlstate(&e), "08004");
    assert!(
        common::text(&e).contains("none is configured"),
        "{}",
        common::text(&e)
    );
}
