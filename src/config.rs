//! Airlock's configuration: one TOML file parsed into typed structs, unknown keys refused,
//! checked as a whole at start-up so that a mistake is reported with the key and the fix
//! before any socket is opened. Secrets (upstream passwords) are never inline: they are
//! read from an environment variable or a file that the config names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::mysql::NativeHash;
use crate::auth::scram::ScramVerifier;

/// Everything that can be wrong with a configuration, each naming the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {problem}; {fix}")]
    Invalid {
        key: String,
        problem: String,
        fix: String,
    },
}

fn invalid(
    key: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// Certificate and key that Airlock presents to clients. Needed for any TLS client.
    pub tls: Option<TlsConfig>,
    pub postgres: Option<PostgresConfig>,
    /// The MySQL/MariaDB listener.
    pub mysql: Option<MysqlConfig>,
    /// Where the policy files are. Without this section Airlock judges statements by its
    /// built-in default policy (the shipped policies/default.toml).
    pub policy: Option<PolicyConfig>,
    /// Users that may log in to Airlock (not to the database: Airlock logs in upstream itself).
    #[serde(default, rename = "users")]
    pub users: Vec<UserConfig>,
    /// Where Airlock keeps its state (approval tickets). Without it, statements a policy holds
    /// for review are refused, since nobody could approve them.
    pub state: Option<StateConfig>,
    /// The admin HTTP API, where approvers decide on held statements.
    pub admin: Option<AdminConfig>,
    /// Who may decide on held statements, through the admin API.
    #[serde(default, rename = "approvers")]
    pub approvers: Vec<ApproverConfig>,
    /// Who may export the audit trail through the admin API.
    #[serde(default, rename = "auditors")]
    pub auditors: Vec<AuditorConfig>,
    /// Where to announce tickets (created, escalated, decided, expired, abandoned).
    #[serde(default, rename = "webhooks")]
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// http:// or https:// URL to POST to.
    pub url: String,
    /// `json` (the ticket and the event) or `slack` (an incoming-webhook message).
    #[serde(default)]
    pub format: WebhookFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of `airlock.db` (tickets) and `audit.db` (the audit trail), SQLite in WAL
    /// mode; created if missing.
    pub dir: PathBuf,
    /// Whether a statement waits for its audit record to be durable.
    #[serde(default)]
    pub audit: AuditSetting,
    /// Ed25519 key (PKCS#8, from `airlock audit keygen`) that signs checkpoints of the
    /// audit trail's head.
    pub checkpoint_key_file: Option<PathBuf>,
    /// How often a checkpoint is signed while records are written.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every_secs: u64,
}

fn default_checkpoint_every() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditSetting {
    /// A statement is forwarded only once its record is durable; if the trail cannot be
    /// written, statements are refused.
    #[default]
    Required,
    /// Records are written in the background; a crash may lose the last ones, and a store
    /// that cannot be written does not stop statements.
    BestEffort,
    /// No audit trail.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditorConfig {
    pub name: String,
    /// SHA-256 (hex) of the auditor's API token, as `airlock token` prints it.
    pub token_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverConfig {
    pub name: String,
    /// The groups a policy rule's `approvers` name.
    #[serde(default)]
    pub groups: Vec<String>,
    /// SHA-256 (hex) of the approver's API token, as `airlock token` prints it.
    pub token_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds to let open sessions finish after SIGTERM/SIGINT before exiting.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Threads serving sessions, each with its own listener socket (SO_REUSEPORT) and its
    /// own single-threaded runtime, so a session never hops threads.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: default_shutdown_grace(),
            workers: default_workers(),
        }
    }
}

fn default_shutdown_grace() -> u64 {
    30
}

fn default_workers() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How clients prove who they are to Airlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthMethod {
    /// SCRAM-SHA-256 (and SCRAM-SHA-256-PLUS over TLS).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Cleartext password, accepted only inside TLS, checked against the SCRAM verifier.
    Password,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub listen: SocketAddr,
    #[serde(default)]
    pub require_tls: bool,
    #[serde(default = "default_client_auth")]
    pub client_auth: ClientAuthMethod,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest single message Airlock will hold in memory to inspect it.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Seconds a client has to finish TLS and authentication.
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_secs: u64,
    /// Keep a database session after its client leaves (reset with DISCARD ALL) for the next
    /// client with the same start-up parameters, as PgBouncer's session mode does.
    #[serde(default)]
    pub reuse_server_sessions: bool,
    /// Seconds an idle database session is kept for reuse.
    #[serde(default = "default_server_idle_timeout")]
    pub server_idle_timeout_secs: u64,
    /// Idle database sessions kept for reuse, per worker thread.
    #[serde(default = "default_max_idle_server_sessions")]
    pub max_idle_server_sessions: usize,
    pub upstream: UpstreamConfig,
}

fn default_client_auth() -> ClientAuthMethod {
    ClientAuthMethod::ScramSha256
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_message_size() -> usize {
    256 * 1024 * 1024
}
fn default_auth_timeout() -> u64 {
    60
}
fn default_server_idle_timeout() -> u64 {
    60
}
fn default_max_idle_server_sessions() -> usize {
    32
}

/// TLS toward the database, as libpq's sslmode spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Never use TLS.
    Disable,
    /// Use TLS if the server offers it, plain otherwise. Verifies the chain when `ca_file` is set.
    Prefer,
    /// Always use TLS. Verifies the chain and host name when `ca_file` is set.
    Require,
    /// Always use TLS, verify the chain against `ca_file` and the host name.
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// host:port of the database.
    pub address: String,
    /// The role Airlock logs in as.
    pub user: String,
    /// Name of an environment variable holding the upstream password.
    pub password_env: Option<String>,
    /// Path of a file holding the upstream password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_upstream_tls")]
    pub tls: UpstreamTlsMode,
    pub ca_file: Option<PathBuf>,
    /// Name checked against the server certificate; defaults to the host part of `address`.
    pub server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

fn default_upstream_tls() -> UpstreamTlsMode {
    UpstreamTlsMode::Prefer
}
fn default_connect_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    pub listen: SocketAddr,
    #[serde(default)]
    pub require_tls: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest command Airlock holds in memory to inspect it (the client's max_allowed_packet
    /// for statements through Airlock).
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Seconds a client has to finish TLS and authentication.
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_secs: u64,
    /// Relay LOAD DATA LOCAL INFILE: offer clients CLIENT_LOCAL_FILES and pass the database's
    /// request for the file, and the file, through. Off: such statements are refused by
    /// Airlock, and a database's request for a local file ends the session.
    #[serde(default)]
    pub allow_local_infile: bool,
    pub upstream: UpstreamConfig,
}

fn default_max_packet_size() -> usize {
    64 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory of policy files (*.toml), read in name order at start-up.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Groups the user belongs to, as policy rules and approvals name them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// For the MySQL listener's mysql_native_password logins: `*` and 40 hex digits (MySQL's
    /// own hash). Without it the user logs in with caching_sha2_password.
    pub mysql_native_password: Option<String>,
    /// A SCRAM-SHA-256 verifier as `airlock passwd` prints it (PostgreSQL's rolpassword format).
    pub scram_sha_256: String,
}

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        Ok(config.relative_to(path.parent().unwrap_or(Path::new("."))))
    }

    /// Parses and checks config text. Paths stay as written.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Resolves relative file paths against the directory holding the config file.
    fn relative_to(mut self, dir: &Path) -> Config {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let Some(policy) = &mut self.policy {
            fix(&mut policy.dir);
        }
        if let Some(state) = &mut self.state {
            fix(&mut state.dir);
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert_file);
            fix(&mut tls.key_file);
        }
        if let Some(my) = &mut self.mysql {
            if let Some(p) = &mut my.upstream.password_file {
                fix(p);
            }
            if let Some(p) = &mut my.upstream.ca_file {
                fix(p);
            }
        }
        if let Some(pg) = &mut self.postgres {
            if let Some(p) = &mut pg.upstream.password_file {
                fix(p);
            }
            if let Some(p) = &mut pg.upstream.ca_file {
                fix(p);
            }
        }
        self
    }

    /// Checks the config as a whole; the first problem found is returned.
    fn check(&self) -> Result<(), ConfigError> {
        if !(1..=256).contains(&self.server.workers) {
            return Err(invalid(
                "server.workers",
                "must be between 1 and 256",
                "use 1 (the default) or up to one per spare CPU core",
            ));
        }
        if self.postgres.is_none() && self.mysql.is_none() {
            return Err(invalid(
                "postgres",
                "no listener is configured",
                "add a [postgres] section with listen and [postgres.upstream], or a [mysql] one",
            ));
        }
        if let Some(pg) = &self.postgres {
            self.check_postgres(pg)?;
        }
        if let Some(my) = &self.mysql {
            self.check_mysql(my)?;
        }
        self.check_approvals()?;
        let mut seen = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let key = format!("users[{i}]");
            if user.name.is_empty() {
                return Err(invalid(
                    format!("{key}.name"),
                    "is empty",
                    "give the user a name",
                ));
            }
            if !seen.insert(user.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("user {:?} is defined twice", user.name),
                    "keep one definition",
                ));
            }
            if let Some(h) = &user.mysql_native_password
                && NativeHash::parse(h).is_none()
            {
                return Err(invalid(
                    format!("{key}.mysql_native_password"),
                    "is not a mysql_native_password hash",
                    "make one with `airlock passwd` (format * and 40 hex digits, as MySQL's PASSWORD() gives)",
                ));
            }
            if ScramVerifier::parse(&user.scram_sha_256).is_none() {
                return Err(invalid(
                    format!("{key}.scram_sha_256"),
                    "is not a SCRAM-SHA-256 verifier",
                    "make one with `airlock passwd` (format SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)",
                ));
            }
        }
        Ok(())
    }

    fn check_postgres(&self, pg: &PostgresConfig) -> Result<(), ConfigError> {
        if pg.max_connections == 0 {
            return Err(invalid(
                "postgres.max_connections",
                "must be at least 1",
                "set it to 1000 or leave it out",
            ));
        }
        if pg.auth_timeout_secs == 0 {
            return Err(invalid(
                "postgres.auth_timeout_secs",
                "0 would time out every login",
                "use a few seconds or leave it out for 60",
            ));
        }
        if pg.upstream.connect_timeout_secs == 0 {
            return Err(invalid(
                "postgres.upstream.connect_timeout_secs",
                "0 would fail every connection to the database",
                "use a few seconds or leave it out for 10",
            ));
        }
        if pg.reuse_server_sessions && pg.server_idle_timeout_secs == 0 {
            return Err(invalid(
                "postgres.server_idle_timeout_secs",
                "0 would expire every idle session at once",
                "use a few seconds or set reuse_server_sessions = false",
            ));
        }
        if pg.max_message_size < 64 * 1024 {
            return Err(invalid(
                "postgres.max_message_size",
                format!(
                    "{} bytes is too small for ordinary statements",
                    pg.max_message_size
                ),
                "use at least 65536 or leave it out for 256 MiB",
            ));
        }
        if pg.require_tls && self.tls.is_none() {
            return Err(invalid(
                "postgres.require_tls",
                "TLS is required but no certificate is configured",
                "add a [tls] section with cert_file and key_file (see `airlock dev-cert`)",
            ));
        }
        if pg.client_auth == ClientAuthMethod::Password && self.tls.is_none() {
            return Err(invalid(
                "postgres.client_auth",
                "\"password\" sends passwords in clear and is only accepted inside TLS",
                "add a [tls] section, or use client_auth = \"scram-sha-256\"",
            ));
        }
        check_upstream("postgres.upstream", &pg.upstream, "5432")?;
        Ok(())
    }

    fn check_mysql(&self, my: &MysqlConfig) -> Result<(), ConfigError> {
        if my.max_connections == 0 {
            return Err(invalid(
                "mysql.max_connections",
                "must be at least 1",
                "set it to 1000 or leave it out",
            ));
        }
        if my.auth_timeout_secs == 0 {
            return Err(invalid(
                "mysql.auth_timeout_secs",
                "0 would time out every login",
                "use a few seconds or leave it out for 60",
            ));
        }
        if my.upstream.connect_timeout_secs == 0 {
            return Err(invalid(
                "mysql.upstream.connect_timeout_secs",
                "0 would fail every connection to the database",
                "use a few seconds or leave it out for 10",
            ));
        }
        if my.max_packet_size < 64 * 1024 {
            return Err(invalid(
                "mysql.max_packet_size",
                format!(
                    "{} bytes is too small for ordinary statements",
                    my.max_packet_size
                ),
                "use at least 65536 or leave it out for 64 MiB",
            ));
        }
        if my.require_tls && self.tls.is_none() {
            return Err(invalid(
                "mysql.require_tls",
                "TLS is required but no certificate is configured",
                "add a [tls] section with cert_file and key_file (see `airlock dev-cert`)",
            ));
        }
        if let Some(pg) = &self.postgres
            && pg.listen == my.listen
            && my.listen.port() != 0
        {
            return Err(invalid(
                "mysql.listen",
                format!("{} is also postgres.listen", my.listen),
                "give each listener its own port (3307 is usual for a MySQL proxy)",
            ));
        }
        check_upstream("mysql.upstream", &my.upstream, "3306")
    }

    fn check_approvals(&self) -> Result<(), ConfigError> {
        if self.admin.is_some() && self.state.is_none() {
            return Err(invalid(
                "admin",
                "the admin API decides on held statements, which need a state directory",
                "add [state] with dir = \"state\" (or any directory Airlock may write)",
            ));
        }
        if !self.approvers.is_empty() && self.admin.is_none() {
            return Err(invalid(
                "approvers",
                "approvers act through the admin API, which is not configured",
                "add [admin] with listen = \"127.0.0.1:9090\"",
            ));
        }
        if !self.auditors.is_empty() && (self.admin.is_none() || self.state.is_none()) {
            return Err(invalid(
                "auditors",
                "auditors export the audit trail through the admin API, which needs [admin] and [state]",
                "add [admin] with listen = \"127.0.0.1:9090\" and [state] with dir = \"state\"",
            ));
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            if self.state.is_none() {
                return Err(invalid(
                    "webhooks",
                    "webhooks announce held statements, which need a state directory",
                    "add [state] with dir = \"state\"",
                ));
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(invalid(
                    format!("webhooks[{i}].url"),
                    format!("{:?} is not an http:// or https:// URL", hook.url),
                    "use the URL the receiver gives (for Slack, the incoming webhook's URL)",
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        let approvers = self
            .approvers
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("approvers[{i}]"), &a.name, &a.token_sha256));
        let auditors = self
            .auditors
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("auditors[{i}]"), &a.name, &a.token_sha256));
        for (key, name, token_sha256) in approvers.chain(auditors) {
            if name.is_empty() || !names.insert(name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{name:?} is empty or defined twice"),
                    "give each approver and auditor one definition with a name",
                ));
            }
            let hex =
                token_sha256.len() == 64 && token_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex || !tokens.insert(token_sha256.to_ascii_lowercase()) {
                return Err(invalid(
                    format!("{key}.token_sha256"),
                    "is not 64 hex digits, or is another approver's or auditor's",
                    "make a token and its hash with `airlock token`",
                ));
            }
        }
        Ok(())
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// Checks an upstream section; `port` is the protocol's usual port, for the example in errors.
fn check_upstream(section: &str, up: &UpstreamConfig, port: &str) -> Result<(), ConfigError> {
    if split_host_port(&up.address).is_none() {
        return Err(invalid(
            format!("{section}.address"),
            format!("{:?} is not host:port", up.address),
            format!("write it as \"127.0.0.1:{port}\" or \"db.internal:{port}\""),
        ));
    }
    if up.user.is_empty() {
        return Err(invalid(
            format!("{section}.user"),
            "is empty",
            "name the user Airlock logs in as",
        ));
    }
    if up.password_env.is_some() && up.password_file.is_some() {
        return Err(invalid(
            format!("{section}.password_env"),
            "both password_env and password_file are set",
            "keep one of them",
        ));
    }
    if up.tls == UpstreamTlsMode::VerifyFull && up.ca_file.is_none() {
        return Err(invalid(
            format!("{section}.ca_file"),
            "tls = \"verify-full\" needs the CA that signed the database's certificate",
            "set ca_file to a PEM file",
        ));
    }
    if up.tls == UpstreamTlsMode::Disable && up.ca_file.is_some() {
        return Err(invalid(
            format!("{section}.ca_file"),
            "is set but tls = \"disable\"",
            "use tls = \"verify-full\" or remove ca_file",
        ));
    }
    Ok(())
}

impl UpstreamConfig {
    /// Reads the upstream password from where the config says it is, if anywhere.
    /// `section` names the config section in errors (`postgres.upstream`, `mysql.upstream`).
    pub fn load_password(&self, section: &str) -> Result<Option<String>, ConfigError> {
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(invalid(
                    format!("{section}.password_env"),
                    format!("environment variable {var} is not set or empty"),
                    format!("export {var} before starting Airlock, or remove password_env"),
                )),
            };
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    format!("{section}.password_file"),
                    format!("cannot read {}: {e}", path.display()),
                    "check the path and that Airlock may read it",
                )
            })?;
            let pw = text.trim_end_matches(['\n', '\r']).to_owned();
            if pw.is_empty() {
                return Err(invalid(
                    format!("{section}.password_file"),
                    format!("{} is empty", path.display()),
                    "write the password into it",
                ));
            }
            return Ok(Some(pw));
        }
        Ok(None)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// The host part of `address`, used for certificate checks.
    pub fn host(&self) -> &str {
        split_host_port(&self.address).map(|(h, _)| h).unwrap_or("")
    }
}

/// Splits "host:port" or "[v6]:port".
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$ZVwD3vRiA0iR8tf1xYHzMlE1Ivlpr4nWFdv48nHUzXA=:ZVwD3vRiA0iR8tf1xYHzMlE1Ivlpr4nWFdv48nHUzXA=";

    fn base() -> String {
        format!(
            "[postgres]\nlisten = \"127.0.0.1:6432\"\n[postgres.upstream]\naddress = \"127.0.0.1:5432\"\nuser = \"postgres\"\n\n[[users]]\nname = \"app\"\nscram_sha_256 = \"{VERIFIER}\"\n"
        )
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::parse(&base()).unwrap();
        let pg = c.postgres.unwrap();
        assert_eq!(pg.client_auth, ClientAuthMethod::ScramSha256);
        assert_eq!(pg.upstream.tls, UpstreamTlsMode::Prefer);
        assert_eq!(pg.max_connections, 1000);
        assert_eq!(c.users.len(), 1);
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let text = base().replace("require_tls", "x") + "\n[server]\nshutdown_grace = 3\n";
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("shutdown_grace"), "{err}");
    }

    #[test]
    fn require_tls_without_certificate_names_the_fix() {
        let text = base().replace("listen =", "require_tls = true\nlisten =");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("postgres.require_tls"), "{err}");
        assert!(err.contains("dev-cert"), "{err}");
    }

    #[test]
    fn bad_verifier_is_refused() {
        let text = base().replace(VERIFIER, "hunter2");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("users[0].scram_sha_256"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "a config error must not echo the value: {err}"
        );
    }

    #[test]
    fn workers_must_be_sensible() {
        let err = Config::parse(&(base() + "[server]\nworkers = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("server.workers"), "{err}");
        assert_eq!(
            Config::parse(&(base() + "[server]\nworkers = 4\n"))
                .unwrap()
                .server
                .workers,
            4
        );
    }

    #[test]
    fn verify_full_needs_a_ca() {
        let text = base().replace(
            "user = \"postgres\"",
            "user = \"postgres\"\ntls = \"verify-full\"",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("postgres.upstream.ca_file"), "{err}");
    }

    #[test]
    fn password_env_must_exist() {
        let text = base().replace(
            "user = \"postgres\"",
            "user = \"postgres\"\npassword_env = \"AIRLOCK_TEST_SURELY_UNSET_VAR\"",
        );
        let c = Config::parse(&text).unwrap();
        let err = c
            .postgres
            .unwrap()
            .upstream
            .load_password("postgres.upstream")
            .unwrap_err()
            .to_string();
        assert!(err.contains("AIRLOCK_TEST_SURELY_UNSET_VAR"), "{err}");
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("airlock.example.toml");
        let c = Config::load(&path).unwrap();
        let pg = c.postgres.unwrap();
        assert_eq!(pg.listen.port(), 6432);
        assert_eq!(pg.upstream.address, "127.0.0.1:5432");
        assert_eq!(pg.client_auth, ClientAuthMethod::ScramSha256);
        assert!(
            pg.upstream.password_env.is_none(),
            "no secret source is assumed by the example"
        );
    }

    #[test]
    fn docker_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/airlock.toml");
        let c = Config::load(&path).unwrap();
        let up = c.postgres.unwrap().upstream;
        assert_eq!(up.address, "postgres:5432");
        assert_eq!(
            up.password_env.as_deref(),
            Some("AIRLOCK_UPSTREAM_PASSWORD")
        );
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("127.0.0.1:5432"), Some(("127.0.0.1", 5432)));
        assert_eq!(split_host_port("[::1]:5432"), Some(("::1", 5432)));
        assert_eq!(split_host_port("db:x"), None);
        assert_eq!(split_host_port(":5432"), None);
    }
}
