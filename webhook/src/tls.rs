//! The serving certificate: read from files, reloaded when they change, swapped
//! only when a complete new pair parses and matches; the old pair stays on any error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertLoadError {
    /// A file could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable PEM.
    #[error("{path} holds no {what} in PEM form")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// rustls refused the key, or the key does not belong to the certificate.
    #[error("the key in {key} does not fit the certificate in {cert}: {reason}")]
    Mismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

/// Where the pair lives on disk.
#[derive(Clone, Debug)]
pub struct CertPaths {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The certificate currently served, swappable without dropping connections:
/// each TLS handshake picks up whatever pair is current.
#[derive(Debug)]
pub struct CertStore {
    paths: CertPaths,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl CertStore {
    /// Loads the pair; fails if it is not usable (the server cannot start without one).
    pub fn load(
        paths: CertPaths,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, CertLoadError> {
        let loaded = load_pair(&paths, &provider)?;
        Ok(Arc::new(Self {
            paths,
            provider,
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Re-reads the files; swaps in the new pair if both files changed into a
    /// pair that parses and matches. Returns whether it swapped.
    pub fn reload(&self) -> Result<bool, CertLoadError> {
        let current = self.current.load();
        let cert_pem = read(&self.paths.cert)?;
        let key_pem = read(&self.paths.key)?;
        if cert_pem == current.cert_pem && key_pem == current.key_pem {
            return Ok(false);
        }
        let loaded = load_from(&self.paths, &self.provider, cert_pem, key_pem)?;
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// Reloads every `interval` for ever, logging swaps and keeping the old pair on errors.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(cert = %self.paths.cert.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not reloaded; keeping the current one")
                }
            }
        }
    }

    /// The leaf certificate being served now (DER).
    pub fn current_leaf(&self) -> Vec<u8> {
        self.current
            .load()
            .key
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// A rustls server config (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1) serving `store`'s pair.
pub fn server_config(
    store: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, CertLoadError> {
    std::fs::read(path).map_err(|source| CertLoadError::Read {
        path: path.into(),
        source,
    })
}

fn load_pair(paths: &CertPaths, provider: &CryptoProvider) -> Result<Loaded, CertLoadError> {
    load_from(paths, provider, read(&paths.cert)?, read(&paths.key)?)
}

fn load_from(
    paths: &CertPaths,
    provider: &CryptoProvider,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
) -> Result<Loaded, CertLoadError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| CertLoadError::Pem {
            path: paths.cert.clone(),
            what: "certificate",
        })?;
    if chain.is_empty() {
        return Err(CertLoadError::Pem {
            path: paths.cert.clone(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertLoadError::Pem {
        path: paths.key.clone(),
        what: "private key",
    })?;
    let mismatch = |reason: String| CertLoadError::Mismatch {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        reason,
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(Loaded {
        key: Arc::new(certified),
        cert_pem,
        key_pem,
    })
}
