//! Shared test harness: starts a real Airlock on 127.0.0.1:0 in front of the real PostgreSQL on
//! 127.0.0.1:5432, makes real TLS certificates, and connects real clients.
#![allow(dead_code)]

pub mod mysql;
pub mod mysql_raw;
pub mod raw;

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use airlock::app::Running;
use airlock::auth::scram::ScramVerifier;
use airlock::config::Config;
use airlock::inspect::{InspectorFactory, NoInspection};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub const PG: &str = "127.0.0.1:5432";
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-password-for-tests";

static LOG: Once = Once::new();

/// Sends Airlock's tracing output to the test's captured output (`AIRLOCK_LOG` to change level).
pub fn init_logging() {
    LOG.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A certificate authority and a server certificate for localhost/127.0.0.1 it signed.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Certs {
    pub fn new() -> Certs {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Airlock test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        Certs {
            dir,
            ca_pem: ca_cert.pem(),
        }
    }

    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A rustls client config that trusts this CA, for tokio-postgres.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    pub fn tokio_postgres_tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        tokio_postgres_rustls::MakeRustlsConnect::new(self.client_config())
    }
}

/// How to set up the Airlock under test. Defaults: no TLS, SCRAM, upstream = local Postgres.
pub struct Setup {
    pub certs: Option<Certs>,
    pub require_tls: bool,
    pub client_auth: &'static str,
    pub upstream_address: String,
    /// The role Airlock logs in to PostgreSQL as.
    pub upstream_user: String,
    /// Extra lines for [postgres.upstream].
    pub upstream_extra: String,
    /// Extra lines for [postgres].
    pub postgres_extra: String,
    pub inspectors: Arc<dyn InspectorFactory>,
    /// Guard the listener with the policy in this directory (`inspectors` is then unused).
    pub policy_dir: Option<PathBuf>,
    /// Groups of the test user.
    pub groups: Vec<String>,
    /// Also run the MySQL listener, in front of the MariaDB on 127.0.0.1:3306.
    pub mysql: bool,
    /// Give the test user a mysql_native_password hash (without one it logs in to the MySQL
    /// listener with caching_sha2_password).
    pub mysql_native: bool,
    /// Extra lines for [mysql].
    pub mysql_extra: String,
    /// The body of [mysql.upstream].
    pub mysql_upstream: String,
    /// Appended to the config as it is (more sections: [state], [admin], [[approvers]]).
    pub extra: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            certs: None,
            require_tls: false,
            client_auth: "scram-sha-256",
            upstream_address: PG.to_string(),
            upstream_user: "postgres".to_string(),
            upstream_extra: "tls = \"disable\"\n".to_string(),
            postgres_extra: String::new(),
            inspectors: Arc::new(NoInspection),
            policy_dir: None,
            groups: Vec::new(),
            mysql: false,
            mysql_native: true,
            mysql_extra: String::new(),
            mysql_upstream: "address = \"127.0.0.1:3306\"\nuser = \"root\"\ntls = \"disable\"\n"
                .to_string(),
            extra: String::new(),
        }
    }
}

impl Setup {
    pub fn config_text(&self) -> String {
        let verifier = ScramVerifier::from_password(PASSWORD, 4096);
        let tls = match &self.certs {
            Some(c) => format!(
                "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                c.cert_file().display().to_string(),
                c.key_file().display().to_string()
            ),
            None => String::new(),
        };
        let policy = match &self.policy_dir {
            Some(dir) => format!("[policy]\ndir = {:?}\n", dir.display().to_string()),
            None => String::new(),
        };
        let mysql = if self.mysql {
            format!(
                "[mysql]\nlisten = \"127.0.0.1:0\"\n{}\n\
                 [mysql.upstream]\n{}connect_timeout_secs = 3\n",
                self.mysql_extra, self.mysql_upstream
            )
        } else {
            String::new()
        };
        let native = if self.mysql_native {
            format!(
                "mysql_native_password = \"{}\"\n",
                airlock::auth::mysql::NativeHash::from_password(PASSWORD)
            )
        } else {
            String::new()
        };
        format!(
            "{tls}{policy}{mysql}\n[postgres]\nlisten = \"127.0.0.1:0\"\nrequire_tls = {}\nclient_auth = \"{}\"\n{}\n\
             [postgres.upstream]\naddress = \"{}\"\nuser = \"{}\"\nconnect_timeout_secs = 3\n{}\n\
             [[users]]\nname = \"{USER}\"\nscram_sha_256 = \"{verifier}\"\ngroups = {:?}\n{native}\n{}",
            self.require_tls,
            self.client_auth,
            self.postgres_extra,
            self.upstream_address,
            self.upstream_user,
            self.upstream_extra,
            self.groups,
            self.extra
        )
    }

    pub async fn start(self) -> Proxy {
        init_logging();
        let config = Config::parse(&self.config_text()).expect("test config is valid");
        let inspectors = match &self.policy_dir {
            Some(_) => airlock::app::guards(&config).expect("the policy loads"),
            None => airlock::app::Inspectors {
                postgres: self.inspectors.clone(),
                ..airlock::app::Inspectors::none()
            },
        };
        let mysql_port = |r: &airlock::app::Running| r.mysql_addr.map(|a| a.port());
        let running = airlock::app::start_with(&config, inspectors)
            .await
            .expect("Airlock starts");
        Proxy {
            port: running.postgres_addr.expect("postgres listener").port(),
            mysql_port: mysql_port(&running),
            admin_port: running.admin_addr.map(|a| a.port()),
            running,
            certs: self.certs,
        }
    }
}

pub struct Proxy {
    pub port: u16,
    /// The MySQL listener's port, when the setup asked for one.
    pub mysql_port: Option<u16>,
    /// The admin API's port, when the setup configured one.
    pub admin_port: Option<u16>,
    pub running: Running,
    pub certs: Option<Certs>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        Setup::default().start().await
    }

    /// A libpq-style connection string to Airlock.
    pub fn conninfo(&self, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname=test {extra}",
            self.port
        )
    }

    pub fn url(&self) -> String {
        format!(
            "postgresql://{USER}:{PASSWORD}@127.0.0.1:{}/test",
            self.port
        )
    }

    /// Connects tokio-postgres without TLS; the connection task runs in the background.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect_plain(&self.conninfo("")).await
    }

    pub async fn connect_tls(
        &self,
        extra: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let tls = self
            .certs
            .as_ref()
            .expect("TLS set up")
            .tokio_postgres_tls();
        let (client, conn) = tokio_postgres::connect(&self.conninfo(extra), tls).await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

pub async fn connect_plain(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conninfo:?}: {e}"));
    tokio::spawn(conn);
    client
}

/// The error a login through `conninfo` (without TLS) fails with; panics if it succeeds.
pub async fn refused(conninfo: &str) -> tokio_postgres::Error {
    match tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await {
        Ok(_) => panic!("{conninfo:?} was expected to be refused"),
        Err(e) => e,
    }
}

/// The `i32` in the first column of the one row `sql` returns.
pub async fn one_i32(client: &tokio_postgres::Client, sql: &str) -> i32 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// How many server processes `pg_stat_activity` lists with `column` (pid or
/// application_name) equal to `value`, seen from `observer`.
pub async fn backends(
    observer: &tokio_postgres::Client,
    column: &str,
    value: &(dyn tokio_postgres::types::ToSql + Sync),
) -> i64 {
    let sql = format!("select count(*) from pg_stat_activity where {column} = $1");
    observer.query_one(&sql, &[value]).await.unwrap().get(0)
}

/// A direct connection to the database, to observe it from the side (pg_stat_activity).
pub async fn direct() -> tokio_postgres::Client {
    connect_plain("host=127.0.0.1 port=5432 user=postgres dbname=test").await
}

/// The SQLSTATE of a tokio-postgres error, or a panic naming the error.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| panic!("not a database error: {e}"))
}

/// A tokio-postgres error's full text: message and hint (its Display is only "db error").
pub fn text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (hint: {})", d.message(), d.hint().unwrap_or("")),
        None => e.to_string(),
    }
}

/// Polls `check` every 100 ms up to `tries` times.
pub async fn eventually<F, Fut>(tries: u32, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The SHA-256 of an API token as the config lists it (`token_sha256`).
pub fn token_sha256(token: &str) -> String {
    airlock::audit::record::hex(&airlock::admin::token_hash(token))
}

/// A policy that allows every statement, for tests about the relay rather than the policy.
pub fn allow_all() -> Option<PathBuf> {
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/policies/allow-all"))
}

/// The Python with the client libraries the tests drive: `.venv/bin/python` at the repository
/// root (made by scripts/test) or `AIRLOCK_TEST_PYTHON`; a missing one fails the test loudly.
pub fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("AIRLOCK_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} not found: run scripts/test (it makes .venv with tests/python/requirements.txt) \
         or set AIRLOCK_TEST_PYTHON",
        python.display()
    );
    python
}

/// A unique name for tables and channels, so tests can run in parallel.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The real `airlock` binary serving a config made by [`Setup`] on a free port; killed on drop.
pub struct Binary {
    pub child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Starts `airlock serve` with `setup`'s config plus `extra` TOML appended.
    pub fn spawn(setup: &Setup, extra: &str, log_level: &str) -> Binary {
        Binary::spawn_logging(setup, extra, log_level, std::process::Stdio::inherit())
    }

    /// As [`Binary::spawn`], with its log (stderr) going to `log`.
    pub fn spawn_logging(
        setup: &Setup,
        extra: &str,
        log_level: &str,
        log: impl Into<std::process::Stdio>,
    ) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = setup.config_text().replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ) + extra;
        let config = dir.path().join("airlock.toml");
        std::fs::write(&config, text).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("AIRLOCK_LOG", log_level)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Binary {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname=test",
            self.port
        )
    }

    /// Connects once the binary is up (within 10 s).
    pub async fn connect(&self) -> tokio_postgres::Client {
        for _ in 0..100 {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&self.conninfo(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                return client;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("airlock did not come up on port {} within 10 s", self.port);
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
