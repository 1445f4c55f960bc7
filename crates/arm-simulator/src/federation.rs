//! Workload identity federation as Entra ID checks it: a `client_assertion` (the external OIDC token, e.g. a
//! Kubernetes service-account token) is accepted only when its signature verifies against a key its issuer publishes
//! (ES256 or RS256 JWKs registered in [`SimState::oidc_issuers`]) and a federated credential of the app matches its
//! `iss`, `sub` and one of its `aud` (Entra's audience for this is `api://AzureADTokenExchange`), within `nbf`/`exp`.
//!
//! Errors carry Entra's codes: AADSTS700211 (issuer), 700212 (audience), 700213 (subject), 50013 (signature),
//! 700024 (time range).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::SigningKey as _;
use rustls::SignatureScheme;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::secret::Secret;

/// The audience Entra ID expects in federated assertions.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A federated identity credential of an app registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedCredential {
    /// Credential name.
    pub name: String,
    /// The external issuer (`iss`), e.g. an AKS cluster's OIDC issuer URL.
    pub issuer: String,
    /// The external subject (`sub`), e.g. `system:serviceaccount:azml-system:azml-operator`.
    pub subject: String,
    /// Accepted audiences (`aud`); Entra's default is [`TOKEN_EXCHANGE_AUDIENCE`].
    pub audiences: Vec<String>,
}

/// Why an assertion was refused: Entra's AADSTS code and description.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: u32,
    pub description: String,
}

fn refuse(code: u32, description: impl Into<String>) -> Refusal {
    Refusal { code, description: description.into() }
}

fn part(jwt: &str, i: usize) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i)?.trim_end_matches('=')).ok()
}

/// DER INTEGER of a big-endian unsigned value.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
        &bytes[first..]
    };
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(trimmed);
    der_tlv(0x02, &body)
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(body);
    out
}

/// ES256's `r || s` as the DER `ECDSA-Sig-Value` ring verifies.
fn ecdsa_fixed_to_der(sig: &[u8]) -> Option<Vec<u8>> {
    if sig.len() != 64 {
        return None;
    }
    let mut body = der_uint(&sig[..32]);
    body.extend(der_uint(&sig[32..]));
    Some(der_tlv(0x30, &body))
}

/// The DER `ECDSA-Sig-Value` rcgen signs with, as ES256's `r || s`.
fn ecdsa_der_to_fixed(der: &[u8]) -> Option<Vec<u8>> {
    // SEQUENCE { INTEGER r, INTEGER s }, short lengths (P-256).
    let mut i = 2;
    let mut out = vec![];
    for _ in 0..2 {
        if der.get(i)? != &0x02 {
            return None;
        }
        let len = *der.get(i + 1)? as usize;
        let v = der.get(i + 2..i + 2 + len)?;
        let v = if v.len() > 32 { &v[v.len() - 32..] } else { v };
        out.extend(std::iter::repeat_n(0u8, 32 - v.len()));
        out.extend_from_slice(v);
        i += 2 + len;
    }
    Some(out)
}

fn b64(v: &Value, k: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(v.get(k)?.as_str()?).ok()
}

/// Verifies `message` / `sig` with a JWK (EC P-256 for ES256, RSA for RS256).
fn verify_with(jwk: &Value, alg: &str, message: &[u8], sig: &[u8]) -> bool {
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let (scheme, public_key, signature) = match (alg, jwk.get("kty").and_then(Value::as_str)) {
        ("ES256", Some("EC")) => {
            let (Some(x), Some(y)) = (b64(jwk, "x"), b64(jwk, "y")) else { return false };
            let mut point = vec![0x04];
            point.extend(x);
            point.extend(y);
            let Some(der) = ecdsa_fixed_to_der(sig) else { return false };
            (SignatureScheme::ECDSA_NISTP256_SHA256, point, der)
        }
        ("RS256", Some("RSA")) => {
            let (Some(n), Some(e)) = (b64(jwk, "n"), b64(jwk, "e")) else { return false };
            let mut body = der_uint(&n);
            body.extend(der_uint(&e));
            (SignatureScheme::RSA_PKCS1_SHA256, der_tlv(0x30, &body), sig.to_vec())
        }
        _ => return false,
    };
    algorithms
        .mapping
        .iter()
        .filter(|(s, _)| *s == scheme)
        .flat_map(|(_, algs)| algs.iter())
        .any(|a| a.verify_signature(&public_key, message, &signature).is_ok())
}

/// Checks a federated client assertion for `app` as Entra ID does.
/// `issuers` are the JWKs each OIDC issuer publishes, `credentials` the app's federated credentials.
pub(crate) fn check_assertion(
    issuers: &BTreeMap<String, Vec<Value>>,
    credentials: &[FederatedCredential],
    assertion: &str,
) -> Result<(), Refusal> {
    let (Some(header), Some(claims), Some(sig)) = (part(assertion, 0), part(assertion, 1), part(assertion, 2)) else {
        return Err(refuse(50027, "JWT token is invalid or malformed."));
    };
    let (Ok(header), Ok(claims)) = (serde_json::from_slice::<Value>(&header), serde_json::from_slice::<Value>(&claims))
    else {
        return Err(refuse(50027, "JWT token is invalid or malformed."));
    };
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let by_issuer: Vec<&FederatedCredential> = credentials.iter().filter(|c| c.issuer == iss).collect();
    if by_issuer.is_empty() {
        return Err(refuse(
            700211,
            format!("No matching federated identity record found for presented assertion issuer '{iss}'."),
        ));
    }
    // The signature, against the keys the issuer publishes (by `kid` when the token names one).
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let kid = header.get("kid").and_then(Value::as_str);
    let signed = assertion.rsplit_once('.').map(|(m, _)| m).unwrap_or_default().as_bytes();
    let keys = issuers.get(iss).map(Vec::as_slice).unwrap_or_default();
    let verified = keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.get("kid").and_then(Value::as_str) == Some(kid)))
        .any(|k| verify_with(k, alg, signed, &sig));
    if !verified {
        return Err(refuse(50013, "Assertion failed signature validation."));
    }
    let by_audience: Vec<&&FederatedCredential> =
        by_issuer.iter().filter(|c| c.audiences.iter().any(|a| auds.contains(&a.as_str()))).collect();
    if by_audience.is_empty() {
        return Err(refuse(
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'.",
                auds.join(",")
            ),
        ));
    }
    if !by_audience.iter().any(|c| c.subject == sub) {
        return Err(refuse(
            700213,
            format!("No matching federated identity record found for presented assertion subject '{sub}'."),
        ));
    }
    let now = jiff::Timestamp::now().as_second();
    let exp = claims.get("exp").and_then(Value::as_i64);
    let nbf = claims.get("nbf").and_then(Value::as_i64);
    if exp.is_none_or(|e| e < now) || nbf.is_some_and(|n| n > now + 300) {
        return Err(refuse(700024, "Client assertion is not within its valid time range."));
    }
    Ok(())
}

/// An OIDC issuer with an ES256 signing key, standing in for a cluster's service-account token issuer. Register it
/// with [`OidcIssuerKey::register`] and sign tokens with [`OidcIssuerKey::token`].
#[derive(Clone, Debug)]
pub struct OidcIssuerKey {
    /// The issuer URL (`iss`).
    pub issuer: String,
    /// Key id (`kid`).
    pub kid: String,
    /// PKCS#8 PEM of the private key.
    pem: Secret,
}

impl OidcIssuerKey {
    /// A fresh issuer key.
    pub fn generate(issuer: &str) -> Self {
        // P-256 key generation with ring cannot fail short of a broken RNG.
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("ECDSA P-256 key generation failed: {e}"));
        Self {
            issuer: issuer.into(),
            kid: uuid::Uuid::new_v4().simple().to_string(),
            pem: Secret::new(key.serialize_pem()),
        }
    }

    fn key(&self) -> Option<rcgen::KeyPair> {
        rcgen::KeyPair::from_pem(self.pem.expose()).ok()
    }

    /// The public key as a JWK (what the issuer's `jwks_uri` serves).
    pub fn jwk(&self) -> Value {
        let raw = self.key().map(|k| rcgen::PublicKeyData::der_bytes(&k).to_vec()).unwrap_or_default();
        let (x, y) = if raw.len() == 65 { (&raw[1..33], &raw[33..]) } else { (&[][..], &[][..]) };
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
               "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
    }

    /// Publishes the key in `issuers` (`SimState::oidc_issuers`, as Entra ID would fetch it from the issuer's
    /// discovery document).
    pub fn register(&self, issuers: &mut BTreeMap<String, Vec<Value>>) {
        issuers.entry(self.issuer.clone()).or_default().push(self.jwk());
    }

    /// A signed token with `claims` (`iss` is set to this issuer; `iat`/`nbf`/`exp` default to now .. +1 h).
    pub fn token(&self, claims: &Value) -> String {
        let now = jiff::Timestamp::now().as_second();
        let mut claims = claims.clone();
        if !claims.is_object() {
            claims = json!({});
        }
        claims.as_object_mut().map(|o| o.entry("iss").or_insert(json!(self.issuer)));
        for (k, v) in [("iat", now), ("nbf", now), ("exp", now + 3600)] {
            claims.as_object_mut().map(|o| o.entry(k).or_insert(json!(v)));
        }
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self
            .key()
            .and_then(|k| k.sign(signing_input.as_bytes()).ok())
            .and_then(|der| ecdsa_der_to_fixed(&der))
            .unwrap_or_default();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Principal, SimState};

    fn app(issuer: &str) -> Principal {
        let mut p = Principal::service_principal("o", "a", "wi", None);
        p.federated_credentials.push(FederatedCredential {
            name: "k8s".into(),
            issuer: issuer.into(),
            subject: "system:serviceaccount:ns:sa".into(),
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
        });
        p
    }

    #[test]
    fn signature_issuer_audience_subject_and_time_are_checked() {
        let key = OidcIssuerKey::generate("https://oidc.example/cluster");
        let mut state = SimState::new("t");
        key.register(&mut state.oidc_issuers);
        let app = app(&key.issuer);
        let good = json!({"sub": "system:serviceaccount:ns:sa", "aud": [TOKEN_EXCHANGE_AUDIENCE]});
        assert_eq!(check_assertion(&state.oidc_issuers, &app.federated_credentials, &key.token(&good)), Ok(()));
        let code = |claims: Value| {
            check_assertion(&state.oidc_issuers, &app.federated_credentials, &key.token(&claims)).unwrap_err().code
        };
        assert_eq!(code(json!({"sub": "system:serviceaccount:ns:other", "aud": TOKEN_EXCHANGE_AUDIENCE})), 700213);
        assert_eq!(code(json!({"sub": "system:serviceaccount:ns:sa", "aud": "api://other"})), 700212);
        assert_eq!(
            code(json!({"sub": "system:serviceaccount:ns:sa", "aud": TOKEN_EXCHANGE_AUDIENCE, "iss": "https://evil"})),
            700211
        );
        assert_eq!(
            code(json!({"sub": "system:serviceaccount:ns:sa", "aud": TOKEN_EXCHANGE_AUDIENCE, "exp": 1})),
            700024
        );
        // Tampered claims, a foreign key, an unsigned token: the signature does not verify.
        let token = key.token(&good);
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = json!({"sub": "system:serviceaccount:ns:sa", "aud": TOKEN_EXCHANGE_AUDIENCE, "iss": key.issuer, "exp": 9_999_999_999i64});
        let tampered = format!("{head}.{}.{sig}", URL_SAFE_NO_PAD.encode(forged.to_string()));
        assert_eq!(
            check_assertion(&state.oidc_issuers, &app.federated_credentials, &tampered).unwrap_err().code,
            50013
        );
        let mut other = OidcIssuerKey::generate(&key.issuer);
        other.kid = key.kid.clone();
        assert_eq!(
            check_assertion(&state.oidc_issuers, &app.federated_credentials, &other.token(&good)).unwrap_err().code,
            50013
        );
        let unsigned = format!("{head}.{}.c2ln", rest.split_once('.').unwrap().0);
        assert_eq!(
            check_assertion(&state.oidc_issuers, &app.federated_credentials, &unsigned).unwrap_err().code,
            50013
        );
    }

    #[test]
    fn rsa_public_keys_are_der_encoded_for_verification() {
        let der = der_tlv(0x30, &[der_uint(&[0x80, 1]), der_uint(&[1, 0, 1])].concat());
        assert_eq!(der, vec![0x30, 0x0a, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x03, 0x01, 0x00, 0x01]);
    }
}
