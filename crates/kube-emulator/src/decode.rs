//! Decoding request bodies with bounded cost.
//!
//! JSON goes through `serde_json`, whose recursion limit (128 levels) answers a too deeply nested body with an
//! error in microseconds. YAML goes through `serde_yaml`, whose parser takes time quadratic in the nesting depth of
//! flow collections (`[[[[...`: seconds for 10,000 levels) before its own recursion limit applies; so YAML bodies are
//! first scanned for their flow nesting depth and refused past the same limit, as the API server's YAML decoder
//! refuses bodies past its `max depth`.

use serde_json::Value;

/// Deepest nesting accepted in a request body (serde_json's recursion limit; the real API server allows 10,000).
pub const MAX_DEPTH: usize = 128;

/// The deepest `[`/`{` nesting of a YAML text, quoted scalars and comments skipped.
fn flow_depth(text: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut single, mut double, mut comment, mut escaped) = (false, false, false, false);
    let mut prev = b'\n';
    for &c in text {
        if comment {
            comment = c != b'\n';
        } else if double {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                double = false;
            }
        } else if single {
            single = c != b'\'';
        } else {
            match c {
                b'#' if prev.is_ascii_whitespace() => comment = true,
                b'"' => double = true,
                b'\'' if !prev.is_ascii_alphanumeric() => single = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        prev = c;
    }
    max
}

/// Parses a YAML (or JSON, which is YAML) body, refusing nesting deeper than [`MAX_DEPTH`] before parsing.
pub fn yaml(body: &[u8]) -> Result<Value, String> {
    if flow_depth(body) > MAX_DEPTH {
        return Err(format!("yaml: exceeded max depth of {MAX_DEPTH}"));
    }
    serde_yaml::from_slice(body).map_err(|e| e.to_string())
}

/// The repeated keys of a YAML (or JSON, which is YAML) text as the API server's YAML decoder reports them:
/// `line 12: key "paused" already set in map`, the line (1-based) of the repetition. Texts the parser refuses have
/// none here (the decoding that follows reports them).
pub fn yaml_duplicates(text: &[u8]) -> Vec<String> {
    use granit_parser::{Event, Parser};
    enum Frame {
        Map { keys: std::collections::HashSet<String>, expect_key: bool },
        Seq,
    }
    let Ok(text) = std::str::from_utf8(text) else { return Vec::new() };
    if flow_depth(text.as_bytes()) > MAX_DEPTH {
        return Vec::new();
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let node =
            matches!(event, Event::Scalar(..) | Event::MappingStart(..) | Event::SequenceStart(..) | Event::Alias(..));
        if node && let Some(Frame::Map { keys, expect_key }) = stack.last_mut() {
            if *expect_key
                && let Event::Scalar(key, ..) = &event
                && !keys.insert(key.to_string())
            {
                out.push(format!("line {}: key {:?} already set in map", span.start.line(), key.as_ref()));
            }
            *expect_key = !*expect_key;
        }
        match event {
            Event::MappingStart(..) => stack.push(Frame::Map { keys: Default::default(), expect_key: true }),
            Event::SequenceStart(..) => stack.push(Frame::Seq),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    out
}

/// What a JSON patch's operations carry besides their fields (`json patch unknown field "[0].foo"`) and repeat
/// (`json patch duplicate field "[1].path"`), as the API server reports them for `fieldValidation`.
pub fn json_patch_problems(body: &[u8]) -> Vec<String> {
    let Ok((ops, duplicates)) = json_with_duplicates(body) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, op) in ops.as_array().into_iter().flatten().enumerate() {
        for key in op.as_object().into_iter().flat_map(|o| o.keys()) {
            if !matches!(key.as_str(), "op" | "path" | "value" | "from") {
                out.push(format!("json patch unknown field \"[{i}].{key}\""));
            }
        }
    }
    // Only the operations' own fields: repeated keys inside a value are dropped by the patch library.
    out.extend(
        duplicates
            .into_iter()
            .filter(|d| d.split('.').count() == 2 && d.starts_with('['))
            .map(|d| format!("json patch duplicate field \"{d}\"")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_duplicates_name_the_line_of_the_repeated_key() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\n  name: b\nspec:\n  paused: true\n  template:\n    spec:\n      containers:\n      - name: x\n        image: y\n        image: z\n  paused: false\n";
        assert_eq!(
            yaml_duplicates(yaml.as_bytes()),
            [
                "line 5: key \"name\" already set in map",
                "line 13: key \"image\" already set in map",
                "line 14: key \"paused\" already set in map",
            ]
        );
        let json = "{\n \"spec\": {\n  \"paused\": false,\n  \"paused\": true\n }\n}";
        assert_eq!(yaml_duplicates(json.as_bytes()), ["line 4: key \"paused\" already set in map"]);
        assert!(yaml_duplicates(b"a: [1, 1]\nb: {c: 1}\nc: {c: 2}\n").is_empty());
    }

    #[test]
    fn json_patch_problems_are_the_operations_own() {
        let body = br#"[{"op": "add", "path": "/a", "value": {"x": 1, "x": 2}, "foo": "bar"},
                        {"op": "add", "path": "/b", "path": "/c", "value": 1}]"#;
        assert_eq!(
            json_patch_problems(body),
            ["json patch unknown field \"[0].foo\"", "json patch duplicate field \"[1].path\""]
        );
    }

    #[test]
    fn flow_depth_skips_quotes_and_comments() {
        assert_eq!(flow_depth(b"a: [1, {b: [2]}]\n"), 3);
        assert_eq!(flow_depth(b"a: \"[[[[\" # [[[[\nb: '{{{{'\nc: it's [x]\n"), 1);
    }

    #[test]
    fn deep_yaml_is_refused_quickly_and_shallow_yaml_parses() {
        let deep = format!("a: {}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let err = yaml(deep.as_bytes()).err().unwrap_or_default();
        assert_eq!(err, "yaml: exceeded max depth of 128");
        // Refused by the scan, not by the parser (which needs minutes for this).
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        assert_eq!(yaml(b"a: [1, 2]").ok(), Some(serde_json::json!({"a": [1, 2]})));
    }
}

/// Parses a JSON body, also returning the paths of duplicate fields (`spec.replicas`, `items[0].name`): the API
/// server's strict decoder reports them per `fieldValidation` (the value kept is the last one, as Go's decoder keeps).
pub fn json_with_duplicates(body: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Seed { path: String::new(), duplicates: &mut duplicates }.deserialize(&mut de)?;
    de.end()?;
    Ok((value, duplicates))
}

struct Seed<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = format!("{}[{}]", self.path, items.len());
            match seq.next_element_seed(Seed { path, duplicates: &mut *self.duplicates })? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if out.contains_key(&key) {
                self.duplicates.push(path.clone());
            }
            let value = map.next_value_seed(Seed { path, duplicates: &mut *self.duplicates })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod duplicate_tests {
    use super::*;

    #[test]
    fn duplicates_are_found_with_their_paths_and_the_last_value_wins() {
        let (v, dups) =
            json_with_duplicates(br#"{"a": 1, "b": [{"c": 1, "c": 2}], "a": 3}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, serde_json::json!({"a": 3, "b": [{"c": 2}]}));
        assert_eq!(dups, vec!["b[0].c".to_string(), "a".to_string()]);
        assert!(json_with_duplicates(b"{\"a\": 1} x").is_err());
    }
}
