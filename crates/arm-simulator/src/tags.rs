//! Azure's limits on resource tags, checked on every PUT and PATCH that carries `tags` (resource groups and
//! resources), as ARM does before the resource provider sees the request.
//!
//! Limits (learn.microsoft.com "Use tags to organize your Azure resources", limitations): at most 50 tags per
//! resource; tag names at most 512 characters (128 for storage accounts), values at most 256; names must not contain
//! `<`, `>`, `%`, `&`, `\`, `?` or `/`, nor control characters. Error codes and messages as Azure answers them
//! (`InvalidTagNameCharacters` as quoted in Microsoft's own CLI documentation; `InvalidTags`, `InvalidTagName` and
//! `InvalidTagValueLength` as Microsoft's Az.Migrate module mirrors ARM's answers).

use http::Method;
use serde_json::Value;

use super::reply::ArmError;
use super::route::STORAGE;

/// Most tags one resource may carry.
pub(crate) const MAX_TAGS: usize = 50;
/// Longest tag name (storage accounts: [`MAX_STORAGE_TAG_NAME`]).
pub(crate) const MAX_TAG_NAME: usize = 512;
/// Longest tag name on a storage account.
pub(crate) const MAX_STORAGE_TAG_NAME: usize = 128;
/// Longest tag value.
pub(crate) const MAX_TAG_VALUE: usize = 256;

/// Checks the `tags` of a PUT or PATCH body for a resource of type `rtype` (its full type). Other methods, bodies
/// without `tags` and bodies that are not JSON pass (the handler reports the latter).
pub(crate) fn check_request(method: &Method, body: &[u8], rtype: &str) -> Result<(), ArmError> {
    if *method != Method::PUT && *method != Method::PATCH {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    match value.get("tags") {
        Some(Value::Object(tags)) => check_tags(tags.iter().map(|(k, v)| (k.as_str(), v)), rtype),
        Some(Value::Null) | None => Ok(()),
        Some(_) => Err(ArmError::bad_request(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'tags' must be an object.",
        )),
    }
}

/// Checks one resource's tag set.
pub(crate) fn check_tags<'a>(tags: impl Iterator<Item = (&'a str, &'a Value)>, rtype: &str) -> Result<(), ArmError> {
    let tags: Vec<(&str, &Value)> = tags.collect();
    if tags.len() > MAX_TAGS {
        return Err(ArmError::bad_request(
            "InvalidTags",
            format!(
                "Too many tags specified. Requested tag count - '{}'. Maximum number of tags allowed - '{MAX_TAGS}'.",
                tags.len()
            ),
        ));
    }
    let max_name = if rtype.eq_ignore_ascii_case(STORAGE) { MAX_STORAGE_TAG_NAME } else { MAX_TAG_NAME };
    for (name, value) in &tags {
        if name.trim().is_empty() {
            return Err(ArmError::bad_request(
                "InvalidTagName",
                "The tag name must be non-null, non-empty and non-whitespace only. Please provide an actual value.",
            ));
        }
        if name.chars().count() > max_name {
            return Err(ArmError::bad_request(
                "InvalidTagName",
                format!(
                    "Tag key too large. Following tag name '{name}' exceeded the maximum length. Maximum allowed length for tag name - '{max_name}' characters."
                ),
            ));
        }
        if name.chars().any(|c| matches!(c, '<' | '>' | '%' | '&' | '\\' | '?' | '/') || c.is_control()) {
            return Err(ArmError::bad_request(
                "InvalidTagNameCharacters",
                format!("The tag names '{name}' have reserved characters '<,>,%,&,\\,?,/' or control characters."),
            ));
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(ArmError::bad_request(
                "InvalidTagValueLength",
                format!(
                    "Tag value too large. Following tag value '{value}' exceeded the maximum length. Maximum allowed length for tag value - '{MAX_TAG_VALUE}' characters."
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(body: Value, rtype: &str) -> Result<(), String> {
        check_request(&Method::PUT, body.to_string().as_bytes(), rtype).map_err(|e| e.code)
    }

    #[test]
    fn azure_refuses_what_its_limits_forbid() {
        let ws = "Microsoft.MachineLearningServices/workspaces";
        assert_eq!(check(json!({"tags": {"a": "b"}}), ws), Ok(()));
        assert_eq!(check(json!({"location": "x"}), ws), Ok(()));
        for bad in ["a/b", "a<b", "a>b", "a%b", "a&b", "a\\b", "a?b", "a\u{7}b"] {
            assert_eq!(check(json!({"tags": {bad: "v"}}), ws), Err("InvalidTagNameCharacters".into()), "{bad:?}");
        }
        assert_eq!(check(json!({"tags": {" ": "v"}}), ws), Err("InvalidTagName".into()));
        assert_eq!(check(json!({"tags": {"n".repeat(512): "v"}}), ws), Ok(()));
        assert_eq!(check(json!({"tags": {"n".repeat(513): "v"}}), ws), Err("InvalidTagName".into()));
        assert_eq!(check(json!({"tags": {"n".repeat(129): "v"}}), STORAGE), Err("InvalidTagName".into()));
        assert_eq!(check(json!({"tags": {"n": "v".repeat(256)}}), ws), Ok(()));
        assert_eq!(check(json!({"tags": {"n": "v".repeat(257)}}), ws), Err("InvalidTagValueLength".into()));
        let fifty: serde_json::Map<String, Value> = (0..50).map(|i| (format!("t{i}"), json!("v"))).collect();
        assert_eq!(check(json!({"tags": fifty}), ws), Ok(()));
        let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("t{i}"), json!("v"))).collect();
        assert_eq!(check(json!({"tags": many}), ws), Err("InvalidTags".into()));
        // GET and DELETE carry no tags to judge.
        let get = check_request(&Method::GET, json!({"tags": {"a/b": ""}}).to_string().as_bytes(), ws);
        assert!(get.is_ok());
    }
}
