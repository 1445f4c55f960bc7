//! A secret value of the simulated world (storage keys, client secrets, endpoint keys, signing keys) that never shows
//! in `Debug` or `Display`.

use std::fmt;

use base64::Engine as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// A secret value (storage key, client secret, endpoint key). `Debug`/`Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; call only where it must leave the process (an HTTP body).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A random secret of `bytes` random bytes, base64-encoded (Azure storage keys are 64 bytes).
    pub fn random(bytes: usize) -> Self {
        let mut buf = vec![0u8; bytes];
        rand::rng().fill(&mut buf[..]);
        Self(base64::engine::general_purpose::STANDARD.encode(buf))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
