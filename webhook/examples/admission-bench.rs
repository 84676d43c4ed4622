//! Admission throughput and latency of the `staticpod-webhook` binary over TLS on
//! loopback, with keep-alive connections, for a typical StaticPod review
//! (alternating mutate and validate).
//!
//! ```sh
//! cargo build --release -p staticpod-webhook --bins --examples
//! target/release/examples/admission-bench [--seconds 10] [--rate 1000] [--connections 16]
//! ```
//!
//! Phase 1 (saturation): `--connections` keep-alive connections send back to back
//! for `--seconds`; prints requests/s. Phase 2 (fixed rate): requests are scheduled
//! at `--rate` per second across the connections, latency measured from each
//! request's scheduled start (no coordinated omission); prints p50/p99/max. Then
//! the webhook's peak RSS. The load generator shares the machine with the server.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use staticpod_certs::CertificateAuthority;
use staticpod_webhook::crypto_provider;
use staticpod_webhook::routes::{MUTATE_PATH, VALIDATE_PATH};

const REVIEW: &str = include_str!("review.json");

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn request(sender: &mut Sender, mutate: bool) -> anyhow::Result<()> {
    sender.ready().await?;
    let path = if mutate { MUTATE_PATH } else { VALIDATE_PATH };
    let req = hyper::Request::post(format!("/{path}"))
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REVIEW.as_bytes())))?;
    let res = sender.send_request(req).await?;
    anyhow::ensure!(res.status() == 200, "status {}", res.status());
    let body = res.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        body.windows(14).any(|w| w == b"\"allowed\":true"),
        "not allowed"
    );
    Ok(())
}

/// User + system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

// One thread for the load generator, so the server keeps both cores' worth of workers.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let (seconds, rate, connections) = (
        arg("--seconds", 10),
        arg("--rate", 1000),
        arg("--connections", 16),
    );
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("staticpod-webhook"))
        .unwrap_or_else(|| PathBuf::from("staticpod-webhook"));
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p staticpod-webhook --bins --examples`",
        bin.display()
    );

    let dir =
        std::env::temp_dir().join(format!("staticpod-admission-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = CertificateAuthority::generate("bench-ca")?;
    let pair = ca.issue_server("webhook", &["127.0.0.1"])?;
    std::fs::write(dir.join("tls.crt"), &pair.cert_pem)?;
    std::fs::write(dir.join("tls.key"), &pair.key_pem)?;
    let (port, admin) = (free_port(), free_port());
    let mut server = Command::new(&bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(
        ca.pair().cert_pem.as_bytes(),
    )?)?;
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probe = loop {
        match connect(addr, tls.clone()).await {
            Ok(sender) => break sender,
            Err(e) if Instant::now() > deadline => anyhow::bail!("webhook did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    for i in 0u32..200 {
        request(&mut probe, i.is_multiple_of(2)).await?; // warm-up
    }

    // Phase 1: saturation.
    let cpu_before = cpu_seconds(server.id());
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr, tls).await?;
            let mut n = 0u64;
            while Instant::now() < end {
                request(&mut sender, (n + c).is_multiple_of(2)).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    println!(
        "saturation: {total} requests in {seconds} s over {connections} keep-alive TLS connections = {:.0} req/s",
        total as f64 / seconds as f64
    );
    let server_cpu = cpu_seconds(server.id()) - cpu_before;
    println!(
        "  webhook CPU during saturation: {:.2} core-seconds = {:.1} µs per request; the load generator used the rest",
        server_cpu,
        server_cpu / total as f64 * 1e6
    );

    // Phase 2: fixed rate, latency from each request's scheduled time.
    let count = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr, tls).await?;
            let mut latencies = Vec::new();
            let mut i = c;
            while i < count {
                let scheduled = start + interval * i as u32;
                // Behind schedule (the previous answer was slow): the wait counts, so
                // slow answers are not hidden. Ahead: start when the timer wakes us
                // (tokio's timer has 1 ms granularity; its lateness is ours, not the
                // server's).
                let sent = if Instant::now() >= scheduled {
                    scheduled
                } else {
                    tokio::time::sleep_until(scheduled.into()).await;
                    Instant::now()
                };
                request(&mut sender, i.is_multiple_of(2)).await?;
                latencies.push(sent.elapsed());
                i += connections;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "fixed rate {rate} req/s for {seconds} s ({} requests): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        latencies.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies
            .last()
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    );

    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id()))?;
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: unknown");
    println!(
        "webhook peak RSS: {}",
        peak.trim_start_matches("VmHWM:").trim()
    );
    server.kill()?;
    server.wait()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
