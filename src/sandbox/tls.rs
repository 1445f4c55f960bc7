//! A throwaway certificate authority and TLS server configs for the emulators.
//!
//! The sandbox never disables certificate verification: it generates a CA at start-up, signs a server certificate
//! for the loopback names with it, and hands the CA PEM to clients (written to a file or passed in memory), which
//! add it as an extra trusted root.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Errors raised while generating certificates or building TLS configs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not generate a key or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the generated material.
    #[error("building the rustls server config failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// Writing the CA file failed.
    #[error("writing CA certificate to {path}: {source}")]
    Write {
        /// Target path.
        path: String,
        /// Underlying IO error.
        #[source]
        source: std::io::Error,
    },
}

/// A certificate authority generated in memory for one sandbox run.
pub struct SandboxCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
}

impl fmt::Debug for SandboxCa {
    // The CA private key must never be printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxCa").field("key", &"<redacted>").finish_non_exhaustive()
    }
}

impl SandboxCa {
    /// Generates a fresh CA (ECDSA P-256, valid for the default rcgen window).
    pub fn generate() -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "azml-operator sandbox CA");
        dn.push(DnType::OrganizationName, "azml-operator sandbox");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_der = cert.der().clone();
        let ca_pem = cert.pem();
        Ok(Self { issuer: Issuer::new(params, key), ca_der, ca_pem })
    }

    /// The CA certificate in PEM form, to be trusted by clients.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate in DER form.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// Writes the CA certificate (PEM) to `path`, e.g. for `--extra-ca-file` style client options.
    pub fn write_ca(&self, path: &Path) -> Result<(), TlsError> {
        std::fs::write(path, self.ca_pem.as_bytes())
            .map_err(|source| TlsError::Write { path: path.display().to_string(), source })
    }

    /// Issues a leaf certificate for `hosts` (DNS names or IP literals) and returns its chain and private key.
    pub fn issue_server_cert(
        &self,
        hosts: &[&str],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hosts.first().copied().unwrap_or("localhost"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.ca_der.clone()], key_der))
    }

    /// A rustls server config (ring provider, HTTP/2 and HTTP/1.1 via ALPN) presenting a certificate for `hosts`.
    pub fn server_config(&self, hosts: &[&str]) -> Result<Arc<ServerConfig>, TlsError> {
        let (chain, key) = self.issue_server_cert(hosts)?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The default hosts a loopback sandbox server answers for.
    pub const LOOPBACK_HOSTS: &'static [&'static str] = &["127.0.0.1", "localhost", "::1"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_signs_a_server_config_and_writes_pem() {
        let ca = SandboxCa::generate().unwrap();
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let cfg = ca.server_config(SandboxCa::LOOPBACK_HOSTS).unwrap();
        assert_eq!(cfg.alpn_protocols.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        ca.write_ca(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ca.ca_pem());
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
