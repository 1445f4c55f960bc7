//! One TLS crypto provider for the whole process.
//!
//! Both `ring` and `aws-lc-rs` end up linked (kube uses ring, the Azure SDK's reqwest uses aws-lc-rs), so rustls
//! cannot pick a default on its own. We install ring once, before any TLS config is built.

/// Installs ring as the process-wide rustls provider. Idempotent: later calls are no-ops.
pub fn install() {
    // `install_default` fails only when a provider is already installed, which is exactly the idempotent case.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
