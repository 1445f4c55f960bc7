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

#[cfg(test)]
mod tests {
    use super::*;

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
