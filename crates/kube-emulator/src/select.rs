//! Label and field selectors, the small JSONPath subset printer columns use, and `Table` rendering.

use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::registry::{PrinterColumn, ResourceType};

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`a=b,c!=d,e in (x,y),!f`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn set_values(s: &str) -> ApiResult<Vec<String>> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: found '{s}', expected: '('")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

impl LabelSelector {
    /// Parses a selector; malformed selectors are 400 BadRequest.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let mut reqs = Vec::new();
        for part in split_top_level(raw) {
            let req = if let Some(key) = part.strip_prefix('!') {
                Req::NotExists(key.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set_values(v)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                Req::In(k.trim().into(), set_values(v)?)
            } else if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                Req::Exists(part)
            } else {
                return Err(ApiError::bad_request(format!("unable to parse requirement: {part}")));
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// The requirements of a `metav1.LabelSelector` object (`matchLabels` and `matchExpressions`); an unknown
    /// operator is an error.
    pub fn from_label_selector(selector: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for (k, v) in selector.get("matchLabels").and_then(Value::as_object).into_iter().flatten() {
            reqs.push(Req::Eq(k.clone(), v.as_str().unwrap_or_default().to_string()));
        }
        for e in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            reqs.push(match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => Req::In(key, values),
                "NotIn" => Req::NotIn(key, values),
                "Exists" => Req::Exists(key),
                "DoesNotExist" => Req::NotExists(key),
                other => return Err(format!("\"{other}\" is not a valid label selector operator")),
            });
        }
        Ok(Self(reqs))
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v),
            Req::NotEq(k, v) => get(k) != Some(v),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector (`metadata.name=x,metadata.namespace!=y`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a selector; only `=`, `==` and `!=` exist for fields.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let mut reqs = Vec::new();
        for part in split_top_level(raw) {
            let (field, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{part}'; can't understand '{part}'")));
            };
            reqs.push((field.trim().to_string(), eq, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    /// Whether the object's fields satisfy every requirement. Any dotted field path is accepted.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let got = field.split('.').try_fold(obj, |cur, k| cur.get(k));
            let got = match got {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (got == *want) == *eq
        })
    }

    /// The value required for `metadata.name`, if the selector pins it.
    pub fn pinned_name(&self) -> Option<&str> {
        self.0.iter().find(|(f, eq, _)| f == "metadata.name" && *eq).map(|(_, _, v)| v.as_str())
    }
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`.
pub fn json_path(obj: &Value, path: &str) -> Vec<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    let mut current = vec![obj.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            rest = &r[end..];
            if key.is_empty() {
                continue;
            }
            current = current.iter().filter_map(|v| v.get(key).cloned()).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = find_bracket_end(r) else {
                return Vec::new();
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            current = apply_bracket(&current, inner);
        } else {
            // Bare leading key without a dot.
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let key = &rest[..end];
            rest = &rest[end..];
            current = current.iter().filter_map(|v| v.get(key).cloned()).collect();
        }
    }
    current
}

fn find_bracket_end(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut in_quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (c, in_quote) {
            ('"' | '\'', None) => in_quote = Some(c),
            (q, Some(open)) if q == open => in_quote = None,
            ('[', None) => depth += 1,
            (']', None) if depth == 0 => return Some(i),
            (']', None) => depth -= 1,
            _ => {}
        }
    }
    None
}

fn apply_bracket(current: &[Value], inner: &str) -> Vec<Value> {
    let inner = inner.trim();
    if inner == "*" {
        return current
            .iter()
            .flat_map(|v| match v {
                Value::Array(a) => a.clone(),
                Value::Object(m) => m.values().cloned().collect(),
                _ => Vec::new(),
            })
            .collect();
    }
    if let Ok(i) = inner.parse::<i64>() {
        return current
            .iter()
            .filter_map(|v| {
                let a = v.as_array()?;
                let idx = if i < 0 { a.len() as i64 + i } else { i };
                usize::try_from(idx).ok().and_then(|i| a.get(i)).cloned()
            })
            .collect();
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let (lhs, op, rhs) = if let Some((l, r)) = filter.split_once("==") {
            (l, true, r)
        } else if let Some((l, r)) = filter.split_once("!=") {
            (l, false, r)
        } else {
            return Vec::new();
        };
        let field = lhs.trim().trim_start_matches('@');
        let want = rhs.trim().trim_matches(|c| c == '"' || c == '\'');
        return current
            .iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter(|item| {
                let got = json_path(item, field);
                let got = got.first().map(scalar_string).unwrap_or_default();
                (got == want) == op
            })
            .cloned()
            .collect();
    }
    let key = inner.trim_matches(|c| c == '"' || c == '\'');
    current.iter().filter_map(|v| v.get(key).cloned()).collect()
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Formats the time since an RFC 3339 timestamp the way kubectl does (`5s`, `3m`, `2d`).
pub fn human_age(ts: &str) -> String {
    let Ok(then) = ts.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn builtin_columns(rt: &ResourceType) -> Vec<PrinterColumn> {
    let col = |name: &str, type_: &str, path: &str| PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.into(),
    };
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => vec![col("Status", "string", ".status.phase")],
        ("", "Secret") => vec![col("Type", "string", ".type"), col("Data", "integer", "#data")],
        ("", "ConfigMap") => vec![col("Data", "integer", "#data")],
        ("coordination.k8s.io", "Lease") => vec![col("Holder", "string", ".spec.holderIdentity")],
        _ => Vec::new(),
    }
}

/// The columns served for a type/version: Name, the printer columns, and Age unless a column already shows it.
pub fn columns(rt: &ResourceType, version: &str) -> Vec<PrinterColumn> {
    let name = PrinterColumn {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace.".into(),
        priority: 0,
        json_path: ".metadata.name".into(),
    };
    if rt.group.is_empty() && rt.kind == "Event" {
        // As the real server prints events: no Name column by default, newest facts first.
        let col = |name: &str, type_: &str, path: &str, priority: i64| PrinterColumn {
            name: name.into(),
            type_: type_.into(),
            format: String::new(),
            description: String::new(),
            priority,
            json_path: path.into(),
        };
        return vec![
            col("Last Seen", "date", EVENT_LAST_SEEN, 0),
            col("Type", "string", ".type", 0),
            col("Reason", "string", ".reason", 0),
            col("Object", "string", EVENT_TARGET, 0),
            col("Message", "string", ".message", 0),
            PrinterColumn { priority: 1, ..name },
        ];
    }
    let mut cols = vec![name];
    let custom = rt.version_info.get(version).map(|v| v.columns.clone()).unwrap_or_default();
    if rt.custom && !custom.is_empty() {
        cols.extend(custom);
    } else {
        cols.extend(builtin_columns(rt));
        cols.push(PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created."
                .into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        });
    }
    cols
}

/// The event table's `Last Seen`: as the real server's printer, the series' last observation, else
/// `lastTimestamp`, else `firstTimestamp`, else `eventTime` (events.k8s.io/v1 events set only the last two).
const EVENT_LAST_SEEN: &str = "@event.lastSeen";
/// The event table's `Object`: `<kind in lower case>/<name>`, as the real server prints it.
const EVENT_TARGET: &str = "@event.target";

fn event_cell(path: &str, obj: &Value) -> Option<Value> {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    match path {
        EVENT_LAST_SEEN => {
            let seen = text(&obj["series"]["lastObservedTime"])
                .or_else(|| text(&obj["lastTimestamp"]))
                .or_else(|| text(&obj["firstTimestamp"]))
                .or_else(|| text(&obj["eventTime"]));
            Some(seen.map_or(Value::Null, |s| json!(human_age(&s))))
        }
        EVENT_TARGET => {
            let kind = obj["involvedObject"]["kind"].as_str().unwrap_or_default().to_ascii_lowercase();
            Some(match obj["involvedObject"]["name"].as_str().filter(|n| !n.is_empty()) {
                Some(name) => json!(format!("{kind}/{name}")),
                None => json!(kind),
            })
        }
        _ => None,
    }
}

fn cell(col: &PrinterColumn, obj: &Value) -> Value {
    if let Some(value) = event_cell(&col.json_path, obj) {
        return value;
    }
    if let Some(field) = col.json_path.strip_prefix('#') {
        // Count of map entries (Secret/ConfigMap DATA column).
        let n = obj.get(field).and_then(Value::as_object).map_or(0, |m| m.len());
        let bin =
            if field == "data" { obj.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len()) } else { 0 };
        return json!(n + bin);
    }
    let values = json_path(obj, &col.json_path);
    let Some(first) = values.first() else {
        return Value::Null;
    };
    match col.type_.as_str() {
        "date" => first.as_str().map(|s| json!(human_age(s))).unwrap_or(Value::Null),
        "integer" | "number" | "boolean" => first.clone(),
        _ => json!(values.iter().map(scalar_string).collect::<Vec<_>>().join(",")),
    }
}

/// `obj` as `meta.k8s.io/v1` `PartialObjectMetadata`: its metadata, nothing else (a Table row's object, and what
/// `Accept: ...;as=PartialObjectMetadata` asks for).
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Renders objects as a `meta.k8s.io/v1` `Table`.
pub fn table(rt: &ResourceType, version: &str, objects: &[Value], list_meta: Value, include_object: &str) -> Value {
    let cols = columns(rt, version);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
                   "format": c.format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols.iter().map(|c| cell(c, o)).collect();
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => partial_metadata(o),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_cover_all_operators() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("tier notin (front)", false),
            ("app", true),
            ("!missing", true),
            ("!app", false),
        ] {
            let parsed = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(parsed.matches(&obj), want, "{sel}");
        }
    }

    #[test]
    fn json_path_filters_conditions() {
        let obj = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        assert_eq!(json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"), vec![json!("True")]);
        assert_eq!(json_path(&obj, ".status.conditions[1].type"), vec![json!("Synced")]);
        assert!(json_path(&obj, ".spec.missing").is_empty());
    }
}
