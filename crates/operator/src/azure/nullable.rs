//! Decoding what ARM really sends: `null` where a list, string or number is expected.
//!
//! Azure's services send explicit `null`s for absent values (`"passwords": null`, `"etag": null`,
//! `"subStatus": {"value": null}`, `"containerRegistryCredentials": null`); `#[serde(default)]` only covers a
//! missing key. Fields that have a natural empty value use [`or_default`], so a `null` decodes as that value
//! instead of failing the whole response.

use serde::{Deserialize, Deserializer};

/// `null` (or a missing key, with `#[serde(default)]`) decodes as `T::default()`.
pub(crate) fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(default, deserialize_with = "super::or_default")]
        list: Vec<u8>,
        #[serde(default, deserialize_with = "super::or_default")]
        text: String,
    }

    #[test]
    fn null_and_missing_are_empty() {
        let t: T = serde_json::from_str(r#"{"list": null, "text": null, "extra": 1}"#).unwrap();
        assert_eq!(t, T { list: vec![], text: String::new() });
        let t: T = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(t, T { list: vec![], text: String::new() });
        let t: T = serde_json::from_str(r#"{"list": [1], "text": "a"}"#).unwrap();
        assert_eq!(t, T { list: vec![1], text: "a".into() });
    }
}
