//! The webhook over real TLS on loopback, with generated certificates: it answers,
//! and it rotates its certificate under load without failing a single request.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use staticpod_certs::{CertPair, CertificateAuthority};
use staticpod_webhook::routes::VALIDATE_PATH;
use staticpod_webhook::{Config, Running, crypto_provider, start};

const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"apps.openyurt.io","version":"v1alpha1","kind":"StaticPod"},"resource":{"group":"apps.openyurt.io","version":"v1alpha1","resource":"staticpods"},"name":"nginx","namespace":"default","operation":"CREATE","userInfo":{},"object":{"apiVersion":"apps.openyurt.io/v1alpha1","kind":"StaticPod","metadata":{"name":"nginx","namespace":"default"},"spec":{"staticPodManifest":"nginx","upgradeStrategy":{"type":"auto","maxUnavailable":1},"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.19.1"}]}}}}}}"#;

/// Writes a file the way a Secret volume update or an operator does: whole, by rename.
fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

async fn serve(dir: &Path, pair: &CertPair) -> Running {
    write_atomically(&dir.join("tls.crt"), &pair.cert_pem);
    write_atomically(&dir.join("tls.key"), &pair.key_pem);
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert: dir.join("tls.crt"),
        tls_key: dir.join("tls.key"),
        cert_reload_interval: Duration::from_millis(50),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        max_body_bytes: 1 << 20,
        log_format: "text".into(),
    };
    start(&config).await.expect("webhook starts")
}

fn client_config(ca: &CertificateAuthority) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der(&ca.pair().cert_pem)))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Full handshakes only: a resumed session does not present the certificate again.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One request on a fresh connection (so every request is a new handshake):
/// the HTTP status and the leaf certificate the server presented.
async fn validate_once(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::post(format!("/{VALIDATE_PATH}"))
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REVIEW.as_bytes())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        body.windows(14).any(|w| w == b"\"allowed\":true"),
        "unexpected answer: {}",
        String::from_utf8_lossy(&body)
    );
    Ok((status, leaf))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("staticpod-webhook-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_tls_and_rotates_its_certificate_under_load_without_failures() {
    let dir = temp_dir("rotate");
    let ca = CertificateAuthority::generate("test-ca").expect("ca");
    let first = ca.issue_server("webhook", &["127.0.0.1"]).expect("cert");
    let running = serve(&dir, &first).await;
    let tls = client_config(&ca);

    let (status, leaf) = validate_once(running.addr, tls.clone())
        .await
        .expect("first request");
    assert_eq!(status, 200);
    assert_eq!(leaf, der(&first.cert_pem));

    // Load: clients making new connections back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let second = ca.issue_server("webhook", &["127.0.0.1"]).expect("cert");
    let second_der = der(&second.cert_pem);
    let saw_second = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, saw_second, tls, want) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            saw_second.clone(),
            tls.clone(),
            second_der.clone(),
        );
        let addr = running.addr;
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match validate_once(addr, tls.clone()).await {
                    Ok((200, leaf)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if leaf == want {
                            saw_second.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok((status, _)) => {
                        eprintln!("status {status}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("request failed: {e:#}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let wait_answered = |at_least: usize| {
        let ok = ok.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while ok.load(Ordering::Relaxed) < at_least {
                assert!(tokio::time::Instant::now() < deadline, "clients stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_answered(300).await;
    let served_before = ok.load(Ordering::Relaxed);

    // Rotate the way a certificate manager does: the key first, then the
    // certificate. In between the files do not match, and the old pair must stay.
    write_atomically(&dir.join("tls.key"), &second.key_pem);
    write_atomically(&dir.join("tls.crt"), &second.cert_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(saw_second.load(Ordering::Relaxed) && running.certs.current_leaf() == second_der) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served (in the store: {}; seen by a client: {}; \
             answered: {}; failed: {})",
            running.certs.current_leaf() == second_der,
            saw_second.load(Ordering::Relaxed),
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Keep the load on for a while after the swap too.
    wait_answered(ok.load(Ordering::Relaxed) + 300).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "rotation under load: {ok} requests answered ({served_before} before the rotation), {failed} failed"
    );
    assert_eq!(failed, 0);
    assert!(
        ok > served_before,
        "requests kept being served across the rotation"
    );
}

#[tokio::test]
async fn a_broken_or_mismatched_pair_keeps_the_old_certificate() {
    let dir = temp_dir("broken");
    let ca = CertificateAuthority::generate("test-ca").expect("ca");
    let first = ca.issue_server("webhook", &["127.0.0.1"]).expect("cert");
    let running = serve(&dir, &first).await;
    let served = running.certs.current_leaf();

    write_atomically(&dir.join("tls.crt"), "not a certificate");
    assert!(running.certs.reload().is_err());
    assert_eq!(running.certs.current_leaf(), served);

    let other = ca.issue_server("webhook", &["127.0.0.1"]).expect("cert");
    write_atomically(&dir.join("tls.crt"), &other.cert_pem); // key still the old one
    let error = running.certs.reload().expect_err("mismatched pair");
    assert!(error.to_string().contains("does not fit"), "{error}");
    assert_eq!(running.certs.current_leaf(), served);

    let (status, leaf) = validate_once(running.addr, client_config(&ca))
        .await
        .expect("still serving");
    assert_eq!((status, leaf), (200, served));
}
