//! TLS on both legs with rustls (ring provider): the server config Airlock presents to clients
//! (ALPN `postgresql`, as PostgreSQL 17's direct TLS requires), the client config it uses toward
//! the database for each upstream TLS mode, and development certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::UpstreamTlsMode;

/// The ALPN protocol name PostgreSQL uses.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        what: "certificates",
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// What Airlock presents to clients.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The certificate chain as PEM, for SCRAM-SHA-256-PLUS channel binding.
    pub cert_pem: Vec<u8>,
}

impl ServerTls {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerTls, TlsError> {
        let certs = read_certs(cert_file)?;
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::File {
            what: "a private key",
            path: key_file.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        let cert_pem = std::fs::read(cert_file).map_err(|e| TlsError::File {
            what: "certificates",
            path: cert_file.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(ServerTls {
            config: Arc::new(config),
            cert_pem,
        })
    }
}

/// How Airlock speaks TLS to the database.
#[derive(Clone)]
pub struct UpstreamTls {
    pub mode: UpstreamTlsMode,
    pub config: Option<Arc<ClientConfig>>,
    pub server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// Builds the client side for `mode`. With a CA file the chain and host name are always
    /// verified (as libpq does when a root certificate is present); without one, `prefer` and
    /// `require` encrypt without authenticating the server.
    pub fn new(
        mode: UpstreamTlsMode,
        ca_file: Option<&Path>,
        server_name: &str,
    ) -> Result<UpstreamTls, TlsError> {
        let server_name =
            ServerName::try_from(server_name.to_owned()).map_err(|e| TlsError::File {
                what: "a server name",
                path: server_name.to_owned(),
                reason: e.to_string(),
            })?;
        let config = match (mode, ca_file) {
            (UpstreamTlsMode::Disable, _) => None,
            (_, Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert)?;
                }
                Some(
                    ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()?
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            }
            (_, None) => Some(
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
                    .with_no_client_auth(),
            ),
        };
        let config = config.map(|mut c| {
            c.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
            Arc::new(c)
        });
        Ok(UpstreamTls {
            mode,
            config,
            server_name,
        })
    }
}

/// Accepts any server certificate but still checks the handshake signatures: encryption
/// without authentication, which is what `prefer`/`require` without a CA mean in libpq.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A self-signed certificate and key (PEM) for local use, valid for `hosts`.
pub fn dev_cert(hosts: &[String]) -> Result<(String, String), TlsError> {
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_loads_as_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = dev_cert(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(dir.path().join("c.pem"), cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), key).unwrap();
        let tls = ServerTls::load(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap();
        assert_eq!(tls.config.alpn_protocols, vec![b"postgresql".to_vec()]);
        let up = UpstreamTls::new(
            UpstreamTlsMode::VerifyFull,
            Some(&dir.path().join("c.pem")),
            "localhost",
        )
        .unwrap();
        assert!(up.config.is_some());
    }

    #[test]
    fn missing_files_are_named() {
        let err = ServerTls::load(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }
}
