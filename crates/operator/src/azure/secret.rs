//! A string whose value never reaches logs, `Debug`/`Display` output or error messages.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Placeholder printed instead of a secret value.
pub const REDACTED: &str = "[REDACTED]";

/// A secret value (account key, endpoint key, access token, client secret).
///
/// `Debug` and `Display` print [`REDACTED`]; the value is only reachable through [`Secret::expose`].
/// It deserialises from a JSON string and serialises back to one (so request bodies can carry it);
/// serialise it only into ARM request bodies or Kubernetes Secrets, never into logs or status.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Every call site is a place where the secret leaves its wrapper; keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// Names whose value is a credential, in connection strings (`AccountKey=...`), SAS URLs (`sig=...`), JSON bodies
/// (`"primaryKey": "..."`) and form posts (`client_secret=...`). Compared case-insensitively.
const SECRET_NAMES: &[&str] = &[
    "accountkey",
    "sharedaccesskey",
    "sharedaccesssignature",
    "sig",
    "client_secret",
    "clientsecret",
    "client_assertion",
    "password",
    "primarykey",
    "secondarykey",
    "primaryaccesskey",
    "secondaryaccesskey",
    "userstoragekey",
    "access_token",
    "refresh_token",
    "accesstoken",
    "apikey",
    "api_key",
];

fn is_secret_name(word: &str) -> bool {
    let word = word.trim_matches(|c| c == '"' || c == '\'');
    SECRET_NAMES.iter().any(|n| n.eq_ignore_ascii_case(word))
}

/// Removes things that look like credentials from text bound for status, events or logs: anything after
/// `Bearer `, the value after a credential's name (`AccountKey=`, `sig=`, `"primaryKey": "`, `client_secret=`,
/// see `SECRET_NAMES`), JWTs (`eyJ...` with two dots) and long base64 runs ending in `=` (storage and endpoint
/// keys). Defence in depth: errors are built without secrets, but ARM error messages are text we do not control.
pub fn scrub(text: &str) -> String {
    // `%` keeps percent-encoded values (SAS signatures) in one run.
    let is_token_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-' | '.' | '%' | '~');
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    // What the text just before the current run says about it.
    let mut state = Follows::Nothing;
    let flush = |run: &mut String, out: &mut String, state: &mut Follows| {
        if run.is_empty() {
            return;
        }
        let jwt = run.starts_with("eyJ") && run.matches('.').count() >= 2;
        let key = run.len() >= 40 && run.ends_with('=');
        let named = run.split_once('=').filter(|(name, value)| !value.is_empty() && is_secret_name(name));
        if *state == Follows::Value || jwt || key {
            out.push_str(REDACTED);
        } else if let Some((name, _)) = named {
            out.push_str(name);
            out.push('=');
            out.push_str(REDACTED);
        } else {
            out.push_str(run);
        }
        *state = if run.eq_ignore_ascii_case("bearer") {
            Follows::Value
        } else if is_secret_name(run.trim_end_matches('=')) {
            Follows::Name
        } else {
            Follows::Nothing
        };
        run.clear();
    };
    for c in text.chars() {
        if is_token_char(c) {
            run.push(c);
            continue;
        }
        flush(&mut run, &mut out, &mut state);
        // A name becomes a key/value pair at a colon or quote (`password: x`, `"primaryKey": "x"`); spaces may sit
        // around it; anything else ends the pairing.
        state = match (state, c) {
            (Follows::Name | Follows::Value, ':' | '"' | '\'' | '\\') => Follows::Value,
            (s, ' ') => s,
            _ => Follows::Nothing,
        };
        out.push(c);
    }
    flush(&mut run, &mut out, &mut state);
    out
}

/// State of [`scrub`] between runs of token characters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follows {
    /// Nothing special.
    Nothing,
    /// A credential's name: its value follows once a `:` or quote is seen.
    Name,
    /// The next run is a credential value.
    Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2-key");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(s.expose(), "hunter2-key");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            key: Secret,
        }
        let h = Holder { key: s.clone() };
        assert!(!format!("{h:?}").contains("hunter2"));
    }

    #[test]
    fn serde_round_trip() {
        let s: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(s.expose(), "abc");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"abc\"");
        let o: Option<Secret> = serde_json::from_str("null").unwrap();
        assert!(o.is_none());
    }

    #[test]
    fn scrub_removes_tokens_and_keys_but_keeps_ids() {
        let key = "q0J3fX9pZ1V0k9l2m3n4o5p6q7r8s9t0u1v2w3x4y5z6A7B8C9D0E1F2G3H4I5J6K7L8M9N0O1P2Q3R4S5T6==";
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let id = "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg-risk-ml";
        let text = format!("failed for {id}: key {key}, token {jwt}; header Authorization: Bearer abc.def");
        let out = scrub(&text);
        assert!(!out.contains(key) && !out.contains(jwt) && !out.contains("abc.def"), "{out}");
        assert!(out.contains(id), "{out}");
        assert!(out.contains("Bearer [REDACTED]"), "{out}");
        assert_eq!(scrub("plain message, nothing secret"), "plain message, nothing secret");
    }

    #[test]
    fn scrub_removes_named_credentials_in_every_notation() {
        let endpoint_key = "Zq8Xr2Lm4Np6Tv8Wb0Yd2Fh4Jk6Mn8Pq"; // 32 characters, no padding: not caught by shape
        let cases = [
            format!("DefaultEndpointsProtocol=https;AccountName=sa1;AccountKey={endpoint_key};EndpointSuffix=x"),
            format!("https://sa1.blob.core.windows.net/c?sv=2022-11-02&sig={endpoint_key}%2B%3D&se=2026"),
            format!(r#"{{"primaryKey": "{endpoint_key}", "secondaryKey":"{endpoint_key}"}}"#),
            format!(r#"body {{\"userStorageKey\":\"{endpoint_key}\"}}"#),
            format!("grant_type=client_credentials&client_id=abc&client_secret={endpoint_key}"),
            format!("password: {endpoint_key}"),
            format!("Authorization: Bearer {endpoint_key}"),
        ];
        for text in &cases {
            let out = scrub(text);
            assert!(!out.contains(endpoint_key), "{text} -> {out}");
            assert!(out.contains("[REDACTED]"), "{out}");
        }
        // Names and ids around them survive; a secret name without a value redacts nothing.
        let out = scrub(&cases[0]);
        assert!(out.contains("AccountName=sa1") && out.contains("AccountKey=[REDACTED]"), "{out}");
        assert!(scrub(&cases[1]).contains("sv=2022-11-02"));
        let plain = "the password policy was updated; key1 regenerated for /subscriptions/x/resourceGroups/rg";
        assert_eq!(scrub(plain), plain);
        assert_eq!(scrub("client_secret= is empty"), "client_secret= is empty");
    }
}
