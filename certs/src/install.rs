//! The install without cert-manager: a CA (created once, then reused) and the
//! webhook's serving certificate (new on every run), written into an output
//! directory as a kustomize overlay over `manifests/` that also holds the TLS
//! Secret and the `caBundle` of both webhook configurations.
//!
//! Every file is written atomically (a hidden temp file in the same directory,
//! fsync, rename, fsync of the directory), so a reader — `kubectl apply -k`, or a
//! webhook reloading `tls.crt`/`tls.key` from disk — never sees a torn file.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use rcgen::{KeyPair, PublicKeyData};

use crate::{CertError, CertPair, CertificateAuthority};

/// What to issue and where.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the CA, the serving certificate and the overlay go.
    pub out_dir: PathBuf,
    /// The kustomize base the overlay applies: a local `manifests/` directory, or a
    /// remote kustomize URL (written as given).
    pub manifests: String,
    /// The webhook's Service name.
    pub service: String,
    /// The namespace of the Service and the Secret.
    pub namespace: String,
    /// The TLS Secret the webhook Deployment mounts.
    pub secret_name: String,
    /// Extra IP SANs (e.g. `127.0.0.1` for a webhook reached by URL).
    pub ips: Vec<IpAddr>,
    /// Extra DNS SANs.
    pub dns_names: Vec<String>,
    /// Replace the CA as well (otherwise the one in `out_dir` is reused).
    pub rotate_ca: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// Whether a new CA was made (first run, or `rotate_ca`).
    pub new_ca: bool,
    /// The names and addresses in the serving certificate.
    pub hosts: Vec<String>,
    /// How many CA certificates the caBundle holds (2 right after a CA rotation:
    /// the new one and the one the running webhook may still serve a chain of).
    pub bundle_size: usize,
    /// The files written, in order.
    pub written: Vec<PathBuf>,
}

/// Why the install files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Making a certificate failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
    /// The CA files in the output directory are unusable.
    #[error(
        "{path}: {reason}; fix or remove the CA files, or run again with --rotate-ca to make a new CA"
    )]
    BadCa {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An option is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// File names inside the output directory.
pub mod files {
    /// The CA certificate (PEM).
    pub const CA_CERT: &str = "ca.crt";
    /// The CA private key (PEM, mode 0600).
    pub const CA_KEY: &str = "ca.key";
    /// The serving certificate (PEM).
    pub const TLS_CERT: &str = "tls.crt";
    /// The serving key (PEM, mode 0600).
    pub const TLS_KEY: &str = "tls.key";
    /// The `kubernetes.io/tls` Secret manifest.
    pub const SECRET: &str = "webhook-tls-secret.yaml";
    /// The JSON patch setting `caBundle`.
    pub const CA_BUNDLE_PATCH: &str = "ca-bundle.patch.yaml";
    /// The overlay.
    pub const KUSTOMIZATION: &str = "kustomization.yaml";
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates or reuses the CA, issues a new serving certificate and writes the
/// overlay. See the module documentation.
pub fn write(options: &Options) -> Result<Report, InstallError> {
    for (flag, value) in [
        ("--service", &options.service),
        ("--namespace", &options.namespace),
        ("--secret-name", &options.secret_name),
    ] {
        if !is_dns_label(value) {
            return Err(InstallError::Invalid(format!(
                "{flag} {value:?} is not a valid Kubernetes name (lowercase letters, digits and '-', \
                 at most 63, starting and ending with a letter or digit)"
            )));
        }
    }
    let out = &options.out_dir;
    // Checked before anything is created, so a wrong --out-dir leaves no trace.
    let base = base_reference(out, &options.manifests)?;
    fs::create_dir_all(out).map_err(io(out))?;

    let ca_cert_path = out.join(files::CA_CERT);
    // With --rotate-ca the old pair is not loaded at all, so a broken one can be
    // replaced.
    let previous_ca = if ca_cert_path.exists() && !options.rotate_ca {
        Some(load_ca(out)?)
    } else {
        None
    };
    let (ca, new_ca) = match previous_ca {
        Some(ca) => (ca, false),
        None => (
            CertificateAuthority::generate(&format!(
                "{}.{} CA",
                options.service, options.namespace
            ))?,
            true,
        ),
    };
    // After a CA rotation the API server must still trust a webhook that serves
    // the old chain until it reloads, so the bundle keeps the old CA for one run.
    let mut bundle = vec![ca.pair().cert_pem.clone()];
    if new_ca
        && options.rotate_ca
        && let Ok(old) = fs::read_to_string(&ca_cert_path)
    {
        bundle.push(old);
    }
    let bundle_pem: String = bundle.iter().map(|p| ensure_newline(p)).collect();

    let mut hosts = vec![
        format!("{}.{}.svc", options.service, options.namespace),
        format!(
            "{}.{}.svc.cluster.local",
            options.service, options.namespace
        ),
    ];
    hosts.extend(options.dns_names.iter().cloned());
    hosts.extend(options.ips.iter().map(IpAddr::to_string));
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let serving = ca.issue_server(&hosts[0], &host_refs)?;

    let mut written = Vec::new();
    let mut put = |name: &str, content: &str, secret: bool| -> Result<(), InstallError> {
        let path = out.join(name);
        write_atomic(&path, content.as_bytes(), secret)?;
        written.push(path);
        Ok(())
    };
    if new_ca {
        // Key before certificate: a run cut short between the two leaves a pair
        // that load_ca refuses with a clear message, never a CA that silently
        // signs certificates nobody trusts.
        put(files::CA_KEY, &ca.pair().key_pem, true)?;
        put(files::CA_CERT, &ca.pair().cert_pem, false)?;
    }
    put(files::TLS_KEY, &serving.key_pem, true)?;
    put(files::TLS_CERT, &serving.cert_pem, false)?;
    put(
        files::SECRET,
        &secret_yaml(options, &serving, &ca.pair().cert_pem),
        true,
    )?;
    put(files::CA_BUNDLE_PATCH, &ca_bundle_patch(&bundle_pem), false)?;
    put(files::KUSTOMIZATION, &kustomization(&base), false)?;
    // The directory holds private keys: keep it out of any git repository it
    // happens to be created in.
    put(
        ".gitignore",
        "# Written by staticpod-certs: private keys.\n*\n",
        false,
    )?;

    Ok(Report {
        new_ca,
        hosts,
        bundle_size: bundle.len(),
        written,
    })
}

/// Reads `ca.crt` + `ca.key` from `dir` and checks that they belong together.
pub fn load_ca(dir: &Path) -> Result<CertificateAuthority, InstallError> {
    let cert_path = dir.join(files::CA_CERT);
    let key_path = dir.join(files::CA_KEY);
    let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    let key_pem = fs::read_to_string(&key_path).map_err(|e| InstallError::BadCa {
        path: key_path.clone(),
        reason: format!("cannot read the CA key next to {}: {e}", files::CA_CERT),
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| InstallError::BadCa {
        path: key_path.clone(),
        reason: format!("not a PEM private key: {e}"),
    })?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| InstallError::BadCa {
            path: cert_path.clone(),
            reason: format!("not a PEM certificate: {e}"),
        })?;
    let cert = pem.parse_x509().map_err(|e| InstallError::BadCa {
        path: cert_path.clone(),
        reason: format!("not an X.509 certificate: {e}"),
    })?;
    if !cert.is_ca() {
        return Err(InstallError::BadCa {
            path: cert_path,
            reason: "the certificate is not a CA (basicConstraints CA:FALSE)".into(),
        });
    }
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(InstallError::BadCa {
            path: key_path,
            reason: format!(
                "the key does not belong to {} (an earlier run was interrupted, or one of the \
                 files was replaced)",
                cert_path.display()
            ),
        });
    }
    CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(|e| InstallError::BadCa {
        path: cert_path,
        reason: e.to_string(),
    })
}

/// How the overlay refers to the base: relative for a local directory (so the
/// output directory can be moved together with the repository), as given for a
/// URL.
fn base_reference(out: &Path, manifests: &str) -> Result<String, InstallError> {
    if manifests.contains("://") || manifests.starts_with("git@") {
        return Ok(manifests.trim_end_matches('/').to_owned());
    }
    let base = Path::new(manifests);
    let base_abs = base.canonicalize().map_err(|e| {
        InstallError::Invalid(format!(
            "--manifests {manifests:?}: {e}; point it at the repository's manifests/ directory \
             (or a kustomize URL)"
        ))
    })?;
    if !base_abs.join("kustomization.yaml").is_file() || !base_abs.join("no-cert-manager").is_dir()
    {
        return Err(InstallError::Invalid(format!(
            "--manifests {manifests:?} has no kustomization.yaml and no-cert-manager/; point it at \
             the repository's manifests/ directory"
        )));
    }
    let out_abs = resolve(out)?;
    if out_abs.starts_with(&base_abs) {
        return Err(InstallError::Invalid(format!(
            "--out-dir {} is inside --manifests {manifests:?}; kustomize refuses an overlay inside \
             its own base, so choose a directory outside it",
            out.display()
        )));
    }
    Ok(relative_path(&out_abs, &base_abs).display().to_string())
}

/// `path` made absolute with symlinks resolved, whether or not it exists yet: its
/// longest existing ancestor canonicalised, the rest appended.
fn resolve(path: &Path) -> Result<PathBuf, InstallError> {
    let absolute = std::path::absolute(path).map_err(io(path))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            return Ok(rest.iter().rev().fold(canonical, |p, part| p.join(part)));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return Ok(absolute),
        }
    }
}

/// `to` relative to `from` (both absolute and canonical).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for part in &to[common..] {
        rel.push(part);
    }
    rel
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn ensure_newline(pem: &str) -> String {
    if pem.ends_with('\n') {
        pem.to_owned()
    } else {
        format!("{pem}\n")
    }
}

fn secret_yaml(options: &Options, serving: &CertPair, ca_pem: &str) -> String {
    format!(
        "# Written by staticpod-certs; re-run it to rotate. The keys are the ones
# cert-manager writes, so the webhook Deployment mounts either unchanged.
apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    app.kubernetes.io/part-of: staticpod-operator
type: kubernetes.io/tls
data:
  tls.crt: {crt}
  tls.key: {key}
  ca.crt: {ca}
",
        name = options.secret_name,
        namespace = options.namespace,
        crt = b64(&serving.cert_pem),
        key = b64(&serving.key_pem),
        ca = b64(ca_pem),
    )
}

fn ca_bundle_patch(bundle_pem: &str) -> String {
    format!(
        "# Written by staticpod-certs: the CA bundle the API server uses to verify the
# webhook, for the only webhook of each configuration.
- op: add
  path: /webhooks/0/clientConfig/caBundle
  value: {}
",
        b64(bundle_pem)
    )
}

fn kustomization(base: &str) -> String {
    let target = |kind: &str| {
        format!(
            "  - path: {patch}
    target:
      group: admissionregistration.k8s.io
      kind: {kind}
      name: staticpod-webhook
",
            patch = files::CA_BUNDLE_PATCH
        )
    };
    format!(
        "# Written by staticpod-certs: the install without cert-manager.
#   kubectl apply -k <this directory>
# Re-run staticpod-certs to rotate the serving certificate (--rotate-ca for the CA).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
  - {secret}
components:
  - {base}/no-cert-manager
patches:
{mutating}{validating}",
        secret = files::SECRET,
        mutating = target("MutatingWebhookConfiguration"),
        validating = target("ValidatingWebhookConfiguration"),
    )
}

/// Writes `content` to `path` so that readers see the old file or the new one,
/// never a mix: a hidden temp file in the same directory (same filesystem, so the
/// rename is atomic), fsync, rename, fsync of the directory. `secret` files are
/// created mode 0600 before any byte is written.
pub fn write_atomic(path: &Path, content: &[u8], secret: bool) -> Result<(), InstallError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| InstallError::Invalid(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if secret { 0o600 } else { 0o644 });
        }
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        file.write_all(content).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "staticpod-certs-test-{label}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// A stand-in for the repository's manifests/ (the overlay only refers to it).
    fn manifests(root: &Path) -> String {
        let dir = root.join("manifests");
        fs::create_dir_all(dir.join("no-cert-manager")).expect("mkdir");
        fs::write(dir.join("kustomization.yaml"), "resources: []\n").expect("write");
        dir.display().to_string()
    }

    fn options(root: &Path) -> Options {
        Options {
            out_dir: root.join("out"),
            manifests: manifests(root),
            service: "staticpod-webhook".into(),
            namespace: "staticpod-system".into(),
            secret_name: "staticpod-webhook-tls".into(),
            ips: vec!["127.0.0.1".parse().expect("ip")],
            dns_names: vec![],
            rotate_ca: false,
        }
    }

    fn read(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join(name)).expect("read")
    }

    #[test]
    fn reuses_the_ca_and_rotates_the_serving_certificate() {
        let root = scratch("rotate");
        let opts = options(&root);
        let first = write(&opts).expect("first run");
        assert!(first.new_ca);
        assert_eq!(
            first.hosts,
            [
                "staticpod-webhook.staticpod-system.svc",
                "staticpod-webhook.staticpod-system.svc.cluster.local",
                "127.0.0.1"
            ]
        );
        let out = &opts.out_dir;
        let (ca1, tls1) = (read(out, files::CA_CERT), read(out, files::TLS_CERT));
        assert!(read(out, files::KUSTOMIZATION).contains("  - ../manifests\n"));
        assert!(read(out, files::KUSTOMIZATION).contains("  - ../manifests/no-cert-manager\n"));
        assert!(read(out, files::SECRET).contains("type: kubernetes.io/tls"));

        let second = write(&opts).expect("second run");
        assert!(!second.new_ca);
        assert_eq!(read(out, files::CA_CERT), ca1, "CA reused");
        assert_ne!(read(out, files::TLS_CERT), tls1, "serving cert rotated");
        assert_eq!(second.bundle_size, 1);

        let rotated = write(&Options {
            rotate_ca: true,
            ..opts.clone()
        })
        .expect("CA rotation");
        assert!(rotated.new_ca);
        assert_ne!(read(out, files::CA_CERT), ca1, "CA rotated");
        assert_eq!(rotated.bundle_size, 2, "old CA kept in the bundle once");
        assert_eq!(write(&opts).expect("after rotation").bundle_size, 1);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [files::CA_KEY, files::TLS_KEY, files::SECRET] {
                let mode = fs::metadata(out.join(key))
                    .expect("stat")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
        let leftovers: Vec<_> = fs::read_dir(out)
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn refuses_a_mismatched_ca_and_bad_options() {
        let root = scratch("refuse");
        let opts = options(&root);
        write(&opts).expect("first run");
        let other = CertificateAuthority::generate("other").expect("ca");
        fs::write(opts.out_dir.join(files::CA_KEY), &other.pair().key_pem).expect("write");
        let err = write(&opts).expect_err("mismatched key").to_string();
        assert!(
            err.contains("does not belong") && err.contains("--rotate-ca"),
            "{err}"
        );
        // --rotate-ca is the way out.
        write(&Options {
            rotate_ca: true,
            ..opts.clone()
        })
        .expect("rotation replaces the broken CA");

        let err = write(&Options {
            service: "Bad_Name".into(),
            ..opts.clone()
        })
        .expect_err("bad service")
        .to_string();
        assert!(err.contains("--service \"Bad_Name\""), "{err}");

        let inside = Options {
            out_dir: PathBuf::from(&opts.manifests).join("generated"),
            ..opts.clone()
        };
        let err = write(&inside).expect_err("out dir inside base").to_string();
        assert!(err.contains("inside --manifests"), "{err}");
        assert!(!inside.out_dir.exists(), "a refused run creates nothing");

        let err = write(&Options {
            manifests: root.join("nowhere").display().to_string(),
            ..opts.clone()
        })
        .expect_err("missing base")
        .to_string();
        assert!(err.contains("--manifests"), "{err}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b/out"), Path::new("/a/manifests")),
            PathBuf::from("../../manifests")
        );
        assert_eq!(
            relative_path(Path::new("/tmp/x"), Path::new("/work/m")),
            PathBuf::from("../../work/m")
        );
    }
}
