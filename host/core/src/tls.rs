//! TLS listeners with optional client-certificate authentication (rustls, ring), and the
//! peer identity (certificate CN and O) handed to handlers as a request extension.

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS settings of a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; without it, clients are not
    /// asked for certificates.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from these CAs.
    #[error("client CAs in {path}: {source}")]
    Verifier {
        /// The CA bundle.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("a client certificate needs both `cert` and `key`")]
    IncompleteIdentity,
}

/// The verified client certificate's subject, for authorisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject common name (the user).
    pub common_name: Option<String>,
    /// Subject organisations (the groups).
    pub organizations: Vec<String>,
    /// Hex SHA-256 of the leaf certificate (its credential id).
    pub fingerprint: String,
    /// The certificate chains to the CA that signs user certificates: its subject is the
    /// caller.
    pub user: bool,
    /// The certificate chains to the front-proxy CA (and has an allowed name): the request
    /// headers name the caller.
    pub front_proxy: bool,
}

/// Which of a listener's CAs a client certificate chains to, checked once per
/// connection: the listener accepts certificates from every CA it trusts, and this tells
/// user certificates from front-proxy certificates.
pub struct PeerTrust {
    user: Option<Arc<dyn ClientCertVerifier>>,
    front_proxy: Option<(Arc<dyn ClientCertVerifier>, Vec<String>)>,
}

impl PeerTrust {
    /// Trust for user certificates signed by `user_ca` and proxy certificates signed by
    /// `proxy_ca` with one of `allowed_names` as CN (any, when empty).
    pub fn new(
        user_ca: Option<&Path>,
        proxy_ca: Option<(&Path, Vec<String>)>,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            user: user_ca.map(verifier).transpose()?,
            front_proxy: match proxy_ca {
                Some((ca, names)) => Some((verifier(ca)?, names)),
                None => None,
            },
        })
    }

    pub(crate) fn classify(&self, chain: &[CertificateDer<'static>], identity: &mut PeerIdentity) {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return;
        };
        let now = rustls_pki_types::UnixTime::now();
        let verifies = |v: &Arc<dyn ClientCertVerifier>| {
            v.verify_client_cert(leaf, intermediates, now).is_ok()
        };
        identity.user = self.user.as_ref().is_some_and(verifies);
        identity.front_proxy = self.front_proxy.as_ref().is_some_and(|(v, names)| {
            verifies(v)
                && (names.is_empty()
                    || identity
                        .common_name
                        .as_ref()
                        .is_some_and(|cn| names.contains(cn)))
        });
    }
}

/// A verifier requiring certificates that chain to the CAs in `ca`.
fn verifier(ca: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in certs(ca)? {
        roots.add(cert).map_err(|e| pem_err(ca, e))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| TlsError::Verifier {
            path: ca.to_owned(),
            source,
        })
}

fn pem_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no certificate found"));
    }
    Ok(certs)
}

/// TLS settings of a client: the CA bundle the server's certificate must chain to, and a
/// client certificate for mutual TLS.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// CA bundle (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate chain (PEM), for mutual TLS (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// The rustls client configuration for these settings (HTTP/1.1 over ALPN).
pub fn client_config(tls: &ClientTlsSettings) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs(&tls.ca)? {
        roots.add(ca).map_err(|e| pem_err(&tls.ca, e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::IncompleteIdentity),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The rustls server configuration for these settings; client certificates chaining to
/// `tls.client_ca` or to any of `extra_client_cas` are accepted (certificates stay
/// optional: callers may authenticate otherwise).
pub fn server_config(
    tls: &TlsSettings,
    extra_client_cas: &[&Path],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| pem_err(&tls.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let cas: Vec<&Path> = tls
        .client_ca
        .as_deref()
        .into_iter()
        .chain(extra_client_cas.iter().copied())
        .collect();
    let builder = match cas.is_empty() {
        false => {
            let mut roots = RootCertStore::empty();
            for ca in &cas {
                for cert in certs(ca)? {
                    roots.add(cert).map_err(|e| pem_err(ca, e))?;
                }
            }
            // Clients without a certificate are let through (they may hold a bearer
            // token); a presented certificate must verify.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: cas.first().map(|p| p.to_path_buf()).unwrap_or_default(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        true => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject of a DER certificate.
pub fn identity_of(cert: &CertificateDer<'_>) -> PeerIdentity {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return PeerIdentity::default();
    };
    let subject = parsed.subject();
    use sha2::Digest as _;
    let identity = PeerIdentity {
        fingerprint: hex::encode(sha2::Sha256::digest(cert.as_ref())),
        user: true,
        front_proxy: false,
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        organizations: subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect(),
    };
    identity
}
