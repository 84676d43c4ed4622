//! The StaticPod admission webhook: defaulting (a JSON Patch of exactly what the
//! shared defaulting changed) and validation (Kubernetes-shaped messages), served
//! over rustls with certificates reloaded from disk.
#![forbid(unsafe_code)]

pub mod admission;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

/// Command-line flags; each can also be set through the environment.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "staticpod-webhook",
    version,
    about = "Admission webhook for StaticPods"
)]
pub struct Config {
    /// Address the HTTPS webhook listens on.
    #[arg(long, env = "STATICPOD_WEBHOOK_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    /// PEM certificate chain served (reloaded when it changes).
    #[arg(
        long,
        env = "STATICPOD_WEBHOOK_TLS_CERT",
        default_value = "/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(
        long,
        env = "STATICPOD_WEBHOOK_TLS_KEY",
        default_value = "/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "STATICPOD_WEBHOOK_CERT_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Address of the plain-HTTP admin port (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "STATICPOD_WEBHOOK_ADMIN_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub admin_listen: SocketAddr,
    /// Largest admission request body accepted, in bytes.
    #[arg(long, env = "STATICPOD_WEBHOOK_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "STATICPOD_WEBHOOK_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Parses `500ms`, `5s`, `2m`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let (number, unit) = value
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| value.split_at(i))
        .ok_or_else(|| format!("{value:?} needs a unit: ms, s or m"))?;
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a duration like 5s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{value:?}: unknown unit {unit:?}; use ms, s or m")),
    }
}

/// The rustls crypto provider, chosen once for the whole process: ring, the one
/// kube's client already compiles in, so the binary carries a single provider.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecates ring's provider only because it lacks post-quantum
    // key exchange; the API server's client still negotiates X25519 with it.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A running webhook: its bound addresses and the certificate store.
pub struct Running {
    /// Where the HTTPS webhook listens.
    pub addr: SocketAddr,
    /// Where the admin port listens.
    pub admin_addr: SocketAddr,
    /// The certificate store (tests look at the served certificate).
    pub certs: Arc<tls::CertStore>,
    /// The serving tasks; aborted on drop.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Loads the certificate, binds both ports and starts serving in the background.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let provider = crypto_provider();
    let paths = tls::CertPaths {
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
    };
    let certs = tls::CertStore::load(paths, provider.clone())?;
    let tls = Arc::new(tls::server_config(certs.clone(), provider)?);
    let metrics = Arc::new(metrics::Metrics::default());
    let state = Arc::new(routes::Admission {
        max_body_bytes: config.max_body_bytes,
        metrics: metrics.clone(),
    });

    let listener = server::bind(config.listen).await?;
    let admin = server::bind(config.admin_listen).await?;
    let (addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
    let admin_routes = routes::admin_routes(metrics);
    let tasks = vec![
        tokio::spawn(server::serve_tls(
            listener,
            tls,
            routes::admission_routes(state),
        )),
        tokio::spawn(async move { warp::serve(admin_routes).incoming(admin).run().await }),
        tokio::spawn(certs.clone().watch(config.cert_reload_interval)),
    ];
    Ok(Running {
        addr,
        admin_addr,
        certs,
        tasks,
    })
}
