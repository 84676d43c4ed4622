//! `staticpod-certs`: the webhook's certificates for clusters without cert-manager.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use staticpod_certs::install::{self, Options};

const EXAMPLES: &str = "\
Examples:
  # First install, from the repository root: a new CA, a serving certificate for
  # staticpod-webhook.staticpod-system.svc, and an overlay to apply.
  staticpod-certs --out-dir staticpod-install
  kubectl apply -k staticpod-install/

  # Rotate the serving certificate (the CA is reused); the webhook reloads the
  # mounted Secret by itself, no restart.
  staticpod-certs --out-dir staticpod-install && kubectl apply -k staticpod-install/

  # Rotate the CA too. The caBundle then holds the new and the old CA, so the API
  # server keeps trusting the webhook while it switches; run once more later to
  # drop the old CA from the bundle.
  staticpod-certs --out-dir staticpod-install --rotate-ca && kubectl apply -k staticpod-install/

  # A webhook reached by URL on an address (e.g. outside the cluster).
  staticpod-certs --out-dir staticpod-install --ip 10.0.0.7

  # The base from a release instead of a checkout.
  staticpod-certs --out-dir staticpod-install \\
    --manifests 'https://github.com/staticpod-operator/staticpod-operator//manifests?ref=v0.1.0'

Files in --out-dir: ca.crt, ca.key (kept and reused), tls.crt, tls.key (new each
run), webhook-tls-secret.yaml, ca-bundle.patch.yaml, kustomization.yaml. Every
file is replaced atomically; keys are mode 0600 and the directory ignores itself
in git.";

/// Creates (or reuses) a CA and issues the admission webhook's serving certificate,
/// then writes a kustomize overlay that installs the operator with them: the TLS
/// Secret the webhook mounts and the caBundle of both webhook configurations.
#[derive(Parser, Debug)]
#[command(name = "staticpod-certs", version, after_help = EXAMPLES)]
struct Cli {
    /// Where the CA, the certificate and the overlay go (outside --manifests).
    #[arg(long, default_value = "staticpod-install")]
    out_dir: PathBuf,
    /// The install manifests to overlay: the repository's manifests/ directory, or a
    /// kustomize URL.
    #[arg(long, default_value = "manifests")]
    manifests: String,
    /// The webhook Service's name.
    #[arg(long, default_value = "staticpod-webhook")]
    service: String,
    /// The namespace of the Service and the Secret.
    #[arg(long, default_value = "staticpod-system")]
    namespace: String,
    /// The TLS Secret the webhook Deployment mounts.
    #[arg(long, default_value = "staticpod-webhook-tls")]
    secret_name: String,
    /// An IP address SAN to add to the serving certificate (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    /// A DNS SAN to add to the serving certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    dns_names: Vec<String>,
    /// Make a new CA as well, instead of reusing the one in --out-dir.
    #[arg(long)]
    rotate_ca: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options {
        out_dir: cli.out_dir,
        manifests: cli.manifests,
        service: cli.service,
        namespace: cli.namespace,
        secret_name: cli.secret_name,
        ips: cli.ips,
        dns_names: cli.dns_names,
        rotate_ca: cli.rotate_ca,
    };
    match install::write(&options) {
        Ok(report) => {
            let ca = if report.new_ca {
                "new CA"
            } else {
                "reused the CA"
            };
            println!(
                "{ca}; serving certificate for {}; caBundle holds {} CA certificate(s)",
                report.hosts.join(", "),
                report.bundle_size
            );
            for path in &report.written {
                println!("wrote {}", path.display());
            }
            println!("next: kubectl apply -k {}", options.out_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("staticpod-certs: {e}");
            ExitCode::FAILURE
        }
    }
}
