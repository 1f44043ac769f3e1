//! The webhook's TLS material, generated on the spot for `wsdrain install`: a CA and a
//! serving certificate it signs for the Service's DNS names.
//!
//! The API server calls the webhook at `<service>.<namespace>.svc` and verifies it
//! against the `caBundle` of the MutatingWebhookConfiguration; without cert-manager
//! nobody else will make that pair, so `install` does. The CA's key is thrown away after
//! signing: nothing in the cluster needs it, and rotation is a new `install` run
//! (`docs/deploy.md`).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
#[error("generating the webhook certificate: {0}")]
pub struct CertError(#[from] rcgen::Error);

/// A CA certificate, and a serving certificate and key it signed, all PEM.
#[derive(Debug, Clone)]
pub struct WebhookCerts {
    /// The CA certificate: the `caBundle`.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

/// The DNS names the API server uses for the Service (it calls `<service>.<ns>.svc`).
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Makes a CA valid `days * 10` days and a serving certificate valid `days` days for
/// [`dns_names`], both starting an hour ago (clock skew between nodes).
pub fn generate(service: &str, namespace: &str, days: u32) -> Result<WebhookCerts, CertError> {
    let start = OffsetDateTime::now_utc() - Duration::hours(1);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("{service}.{namespace} CA (wsdrain install)"),
    );
    ca.not_before = start;
    ca.not_after = start + Duration::days(i64::from(days) * 10);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(dns_names(service, namespace))?;
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = start;
    leaf.not_after = start + Duration::days(i64::from(days));
    let cert = leaf.signed_by(&key, &issuer)?;

    Ok(WebhookCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
