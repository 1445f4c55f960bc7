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
    /// A saved CA could not be read back.
    #[error("cannot load the saved CA from {path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A certificate authority generated in memory for one sandbox run.
pub struct SandboxCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    /// PKCS#8 PEM of the CA key, kept to save it (see [`SandboxCa::save`]).
    key_pem: String,
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
        let params = Self::ca_params()?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_der = cert.der().clone();
        let ca_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Self { issuer: Issuer::new(params, key), ca_der, ca_pem, key_pem })
    }

    /// Subject and usages of the CA certificate (the issuer fields of every leaf it signs).
    fn ca_params() -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "azml-operator sandbox CA");
        dn.push(DnType::OrganizationName, "azml-operator sandbox");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ok(params)
    }

    /// The CA's private key in PEM, for the sandbox to save (privately) next to [`SandboxCa::ca_pem`], so a
    /// restarted sandbox can [`SandboxCa::load`] the same CA.
    pub fn private_key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Loads a CA saved from [`SandboxCa::ca_pem`] and [`SandboxCa::private_key_pem`]: the same certificate keeps signing, so clients that trust the
    /// saved certificate keep trusting the servers of a restarted sandbox.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| TlsError::Load { path: path.display().to_string(), message: e.to_string() })
        };
        let invalid = |path: &Path, message: String| TlsError::Load { path: path.display().to_string(), message };
        let (ca_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(key_path, e.to_string()))?;
        let ca_der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
            .next()
            .ok_or_else(|| invalid(cert_path, "no certificate in the file".into()))?
            .map_err(|e| invalid(cert_path, e.to_string()))?;
        // The certificate must belong to the key, or every leaf would fail verification.
        let public = key.public_key_raw();
        if !ca_der.as_ref().windows(public.len()).any(|w| w == public) {
            return Err(invalid(cert_path, "the certificate does not match the saved key".into()));
        }
        Ok(Self { issuer: Issuer::new(Self::ca_params()?, key), ca_der, ca_pem, key_pem })
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

    #[test]
    fn a_saved_ca_signs_certificates_that_clients_of_the_old_one_trust() {
        use rustls::client::danger::ServerCertVerifier as _;
        let ca = SandboxCa::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"));
        std::fs::write(&cert, ca.ca_pem()).unwrap();
        std::fs::write(&key, ca.private_key_pem()).unwrap();
        let loaded = SandboxCa::load(&cert, &key).unwrap();
        assert_eq!(loaded.ca_pem(), ca.ca_pem());
        // A leaf issued by the loaded CA verifies against the original certificate as the only root.
        let (chain, _) = loaded.issue_server_cert(&["127.0.0.1"]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], now).unwrap();
        // Another CA's key does not pass for this certificate.
        let other = SandboxCa::generate().unwrap();
        let other_key = dir.path().join("other-key.pem");
        std::fs::write(&other_key, other.private_key_pem()).unwrap();
        assert!(SandboxCa::load(&cert, &other_key).is_err());
    }
}
