//! Certificates for installs without cert-manager and for tests: a CA, and the
//! server and client certificates it signs, as PEM.
#![forbid(unsafe_code)]

use std::net::IpAddr;

pub mod install;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The certificate library refused.
    #[error("failed to generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The library's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A host is neither an IP address nor a DNS name.
    #[error(
        "{0:?} is neither an IP address nor a DNS name (lowercase letters, digits, '-' and '.', \
         optionally starting with \"*.\")"
    )]
    BadHost(String),
}

fn context(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let what = what.into();
    move |source| CertError::Generate { what, source }
}

fn is_dns_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// A certificate authority that signs server and client certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    pair: CertPair,
}

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(context("CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params
            .self_signed(&key)
            .map_err(context("CA certificate"))?;
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Self {
            issuer: Issuer::new(params, key),
            pair,
        })
    }

    /// A CA from its PEM certificate and key (e.g. written by an earlier run).
    /// The caller checks that the two belong together ([`install::load_ca`] does).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(context("CA key from PEM"))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(context("CA certificate from PEM"))?;
        Ok(Self {
            issuer,
            pair: CertPair {
                cert_pem: cert_pem.to_owned(),
                key_pem: key_pem.to_owned(),
            },
        })
    }

    /// The CA's own certificate and key (the certificate is the trust bundle).
    pub fn pair(&self) -> &CertPair {
        &self.pair
    }

    /// A serving certificate for `hosts`: each is an IP address SAN if it parses as
    /// one, a DNS SAN otherwise (clients such as the API server check IP SANs for
    /// `https://127.0.0.1` URLs and ignore the common name).
    pub fn issue_server(&self, common_name: &str, hosts: &[&str]) -> Result<CertPair, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, &[]);
        params.subject_alt_names = hosts
            .iter()
            .map(|host| match host.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) if !is_dns_name(host) => Err(CertError::BadHost(host.to_string())),
                Err(_) => host
                    .to_string()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(context(format!("DNS name {host:?}"))),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, &format!("serving certificate for {hosts:?}"))
    }

    /// A client certificate for user `common_name` in `groups` (Kubernetes reads the
    /// groups from the organisation fields).
    pub fn issue_client(&self, common_name: &str, groups: &[&str]) -> Result<CertPair, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, &format!("client certificate for {common_name}"))
    }

    fn sign(&self, mut params: CertificateParams, what: &str) -> Result<CertPair, CertError> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let key = KeyPair::generate().map_err(context(format!("key for {what}")))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(context(what))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A key pair on its own, as PEM.
#[derive(Clone, Debug)]
pub struct KeyPem {
    /// The PKCS#8 private key.
    pub key_pem: String,
    /// The SubjectPublicKeyInfo public key.
    pub public_key_pem: String,
}

/// A fresh key pair on its own (e.g. the API server's service-account signing key,
/// whose public half verifies the tokens).
pub fn generate_key() -> Result<KeyPem, CertError> {
    let key = KeyPair::generate().map_err(context("key"))?;
    Ok(KeyPem {
        key_pem: key.serialize_pem(),
        public_key_pem: key.public_key_pem(),
    })
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_certificates() {
        let ca = CertificateAuthority::generate("test-ca").expect("ca");
        let server = ca
            .issue_server("webhook", &["127.0.0.1", "localhost"])
            .expect("server");
        let client = ca
            .issue_client("admin", &["system:masters"])
            .expect("client");
        for pair in [ca.pair(), &server, &client] {
            assert!(pair.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(pair.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        assert_ne!(server.cert_pem, client.cert_pem);
        for bad in ["not a name!", "", "UPPER.example", "a..b"] {
            assert!(
                matches!(ca.issue_server("bad", &[bad]), Err(CertError::BadHost(_))),
                "{bad:?}"
            );
        }
        assert!(
            ca.issue_server(
                "svc",
                &["*.staticpod-system.svc", "webhook.staticpod-system.svc"]
            )
            .is_ok()
        );
    }
}
