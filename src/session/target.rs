//! The database a listener's sessions log in to, as the config describes it: address,
//! Airlock's own account and password, TLS. Shared by both protocols.

use std::time::Duration;

use crate::config::{ConfigError, UpstreamConfig};
use crate::net::tls::{TlsError, UpstreamTls};

/// The database Airlock logs in to, and how.
pub struct UpstreamTarget {
    pub address: String,
    pub user: String,
    pub password: Option<Secret>,
    pub tls: UpstreamTls,
    pub connect_timeout: Duration,
}

/// A password that never appears in Debug output.
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl UpstreamTarget {
    /// Reads the password and the CA the config's `section` names.
    pub fn from_config(up: &UpstreamConfig, section: &str) -> Result<UpstreamTarget, SetupError> {
        let server_name = up
            .server_name
            .clone()
            .unwrap_or_else(|| up.host().to_owned());
        Ok(UpstreamTarget {
            address: up.address.clone(),
            user: up.user.clone(),
            password: up.load_password(section)?.map(Secret),
            tls: UpstreamTls::new(up.tls, up.ca_file.as_deref(), &server_name)?,
            connect_timeout: up.connect_timeout(),
        })
    }
}
