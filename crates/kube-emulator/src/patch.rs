//! Patch formats: JSON merge patch, JSON patch, strategic merge patch (core kinds) and server-side apply with
//! managed-field tracking.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult, Cause};

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 JSON patch (including `test`); failures are 422 Invalid-style bad requests.
pub fn json_patch(target: &mut Value, patch: &Value) -> ApiResult<()> {
    let mut ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    // Like the API server's JSON patch library, `test` of a missing path against `null` succeeds (kube-rs's
    // finalizer helper relies on it).
    ops.0.retain(|op| match op {
        json_patch::PatchOperation::Test(t) => !(t.value.is_null() && target.pointer(t.path.as_str()).is_none()),
        _ => true,
    });
    json_patch::patch(target, &ops).map_err(|e| {
        ApiError::unprocessable(format!("the server rejected our request due to an error in our request: {e}"))
    })
}

/// Keys that identify elements of object lists for strategic merge (`patchMergeKey` of the core kinds we serve).
const MERGE_KEYS: &[&str] = &["name", "type", "uid", "containerPort", "ip"];

/// Strategic merge patch, enough for what kubectl sends for the core kinds served here: maps merge, `null`
/// deletes, `$patch: replace|delete`, `$deleteFromPrimitiveList/`, `$setElementOrder/` and `$retainKeys`
/// directives, lists of objects merged by their merge key, and `finalizers` merged as a set.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = pmap.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = pmap
        .get("$retainKeys")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect());
    let Some(tmap) = target.as_object_mut() else {
        return;
    };
    if let Some(retain) = retain {
        tmap.retain(|k, _| retain.contains(k));
    }
    for (key, pval) in pmap {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (tmap.get_mut(field).and_then(Value::as_array_mut), pval.as_array()) {
                list.retain(|item| !del.contains(item));
            }
            continue;
        }
        match pval {
            Value::Null => {
                tmap.remove(key);
            }
            Value::Object(inner) if inner.get("$patch").and_then(Value::as_str) == Some("delete") => {
                tmap.remove(key);
            }
            Value::Object(_) => {
                let slot = tmap.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(slot, pval);
            }
            Value::Array(items) => {
                let merged = match tmap.get(key) {
                    Some(Value::Array(existing)) => merge_lists(key, existing, items),
                    _ => items
                        .iter()
                        .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                        .cloned()
                        .collect(),
                };
                tmap.insert(key.clone(), Value::Array(merged));
            }
            other => {
                tmap.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_key(items: &[Value]) -> Option<&'static str> {
    let first = items.iter().find(|i| i.is_object())?;
    MERGE_KEYS
        .iter()
        .copied()
        .find(|k| items.iter().filter(|i| i.is_object()).all(|i| i.get(*k).is_some()) && first.get(*k).is_some())
}

fn merge_lists(field: &str, existing: &[Value], patch: &[Value]) -> Vec<Value> {
    if field == "finalizers" {
        let mut out = existing.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return out;
    }
    let Some(key) = merge_key(patch) else {
        return patch.to_vec();
    };
    let mut out = existing.to_vec();
    for p in patch {
        let id = p.get(key);
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match out.iter().position(|e| e.get(key) == id) {
            Some(i) if delete => {
                out.remove(i);
            }
            Some(i) => strategic_merge(&mut out[i], p),
            None if delete => {}
            None => out.push(p.clone()),
        }
    }
    out
}

/// A set of owned leaf fields, each a path of object keys.
pub type FieldSet = BTreeSet<Vec<String>>;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `status` excluded when it is a separate subresource.
    Main {
        /// Whether `/status` is a separate subresource.
        status_is_subresource: bool,
    },
    /// The `/status` subresource.
    Status,
}

/// The metadata fields whose ownership is tracked.
const TRACKED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// Restricts an object to the part a write in `scope` may set.
pub fn scoped(obj: &Value, scope: Scope) -> Value {
    let Some(map) = obj.as_object() else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    for (k, v) in map {
        match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => {}
            ("metadata", Scope::Main { .. }) => {
                let meta: Map<String, Value> = v
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(mk, _)| TRACKED_METADATA.contains(&mk.as_str()))
                            .map(|(mk, mv)| (mk.clone(), mv.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                if !meta.is_empty() {
                    out.insert(k.clone(), Value::Object(meta));
                }
            }
            ("status", Scope::Main { status_is_subresource: true }) => {}
            ("status", Scope::Status) => {
                out.insert(k.clone(), v.clone());
            }
            (_, Scope::Status) => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Leaf paths of a value: scalars, lists (atomic) and empty maps are leaves.
pub fn leaf_paths(v: &Value) -> FieldSet {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut FieldSet) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ if !prefix.is_empty() => {
                out.insert(prefix.clone());
            }
            _ => {}
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Deep-merges `src` into `dst`: maps merge, everything else replaces.
pub fn deep_merge(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => deep_merge(existing, v),
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (d, s) => *d = s.clone(),
    }
}

/// Encodes a field set as `FieldsV1`.
pub fn encode_fields(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for k in path {
            let entry = cur.entry(format!("f:{k}")).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            match entry.as_object_mut() {
                Some(m) => cur = m,
                None => break,
            }
        }
    }
    Value::Object(root)
}

/// Decodes `FieldsV1` into leaf paths (keys other than `f:` are ignored).
pub fn decode_fields(v: &Value) -> FieldSet {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut FieldSet) {
        let children: Vec<(&String, &Value)> =
            v.as_object().map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect()).unwrap_or_default();
        let owns_self = v.get(".").is_some();
        if (children.is_empty() || owns_self) && !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, child) in children {
            prefix.push(k[2..].to_string());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// API version the manager used.
    pub api_version: String,
    /// When the entry last changed.
    pub time: String,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    /// Owned fields.
    pub fields: FieldSet,
}

/// Reads `metadata.managedFields`.
pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| ManagedEntry {
                    manager: e.get("manager").and_then(Value::as_str).unwrap_or("").into(),
                    operation: e.get("operation").and_then(Value::as_str).unwrap_or("Update").into(),
                    api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("").into(),
                    time: e.get("time").and_then(Value::as_str).unwrap_or("").into(),
                    subresource: e.get("subresource").and_then(Value::as_str).map(String::from),
                    fields: e.get("fieldsV1").map(decode_fields).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata.managedFields`, dropping entries that own nothing.
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who is writing, for managed-field bookkeeping.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// Field manager.
    pub manager: &'a str,
    /// API version of the request.
    pub api_version: &'a str,
    /// Current time (RFC 3339).
    pub now: &'a str,
    /// Which part of the object is written.
    pub scope: Scope,
}

impl Writer<'_> {
    fn subresource(&self) -> Option<String> {
        matches!(self.scope, Scope::Status).then(|| "status".to_string())
    }
}

/// Records an `Update` (create, update, non-apply patch): the writer takes the fields it changed from everyone.
pub fn track_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut entries = old.map(read_managed).unwrap_or_default();
    let new_scoped = scoped(new, w.scope);
    let old_scoped = old.map(|o| scoped(o, w.scope));
    let changed: FieldSet = leaf_paths(&new_scoped)
        .into_iter()
        .filter(|p| old_scoped.as_ref().and_then(|o| value_at(o, p)) != value_at(&new_scoped, p))
        .collect();
    for e in entries.iter_mut() {
        e.fields.retain(|p| !changed.iter().any(|c| overlaps(c, p)));
    }
    let sub = w.subresource();
    let pos = entries.iter().position(|e| e.manager == w.manager && e.operation == "Update" && e.subresource == sub);
    if !changed.is_empty() {
        match pos {
            Some(i) => {
                entries[i].fields.extend(changed);
                entries[i].time = w.now.to_string();
                entries[i].api_version = w.api_version.to_string();
            }
            None => entries.push(ManagedEntry {
                manager: w.manager.to_string(),
                operation: "Update".into(),
                api_version: w.api_version.to_string(),
                time: w.now.to_string(),
                subresource: sub,
                fields: changed,
            }),
        }
    }
    // Fields that no longer exist are owned by nobody.
    let full = leaf_paths(new);
    for e in entries.iter_mut() {
        e.fields.retain(|p| full.iter().any(|f| overlaps(f, p)));
    }
    write_managed(new, &entries);
}

/// Server-side apply of `applied` onto `live` (None: the object does not exist yet).
///
/// Returns the merged object with updated managed fields, or the conflicts with other managers when not forced.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<(String, String, String)>> {
    let mut entries = live.map(read_managed).unwrap_or_default();
    let applied_scoped = scoped(applied, w.scope);
    let owned = leaf_paths(&applied_scoped);
    let sub = w.subresource();
    let is_me = |e: &ManagedEntry| e.manager == w.manager && e.operation == "Apply" && e.subresource == sub;

    // Conflicts: another manager owns an overlapping field whose live value differs from the applied one.
    let mut conflicts: BTreeMap<(String, String), String> = BTreeMap::new();
    if let Some(live) = live {
        let live_scoped = scoped(live, w.scope);
        for e in entries.iter().filter(|e| !is_me(e)) {
            for p in &owned {
                for q in e.fields.iter().filter(|q| overlaps(p, q)) {
                    let at = if q.len() < p.len() { q } else { p };
                    if value_at(&live_scoped, at) != value_at(&applied_scoped, at) {
                        let field = format!(".{}", at.join("."));
                        conflicts.insert((e.manager.clone(), field), e.api_version.clone());
                    }
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts
            .into_iter()
            .map(|((manager, field), api_version)| (manager, field, api_version))
            .collect());
    }

    let mut result = match live {
        Some(l) => l.clone(),
        None => {
            let mut base = json!({});
            for k in ["apiVersion", "kind"] {
                if let Some(v) = applied.get(k) {
                    base[k] = v.clone();
                }
            }
            base["metadata"] = applied.get("metadata").cloned().unwrap_or_else(|| json!({}));
            base
        }
    };
    // Fields this manager applied before but no longer applies are removed unless someone else owns them.
    let previous: FieldSet = entries.iter().filter(|e| is_me(e)).flat_map(|e| e.fields.clone()).collect();
    for gone in previous.difference(&owned) {
        let shared = entries.iter().filter(|e| !is_me(e)).any(|e| e.fields.iter().any(|q| overlaps(q, gone)));
        if !shared {
            remove_at(&mut result, gone);
        }
    }
    deep_merge(&mut result, &applied_scoped);

    if force {
        for e in entries.iter_mut().filter(|e| !is_me(e)) {
            e.fields.retain(|q| !owned.iter().any(|p| overlaps(p, q)));
        }
    }
    let mine = ManagedEntry {
        manager: w.manager.to_string(),
        operation: "Apply".into(),
        api_version: w.api_version.to_string(),
        time: w.now.to_string(),
        subresource: sub.clone(),
        fields: owned,
    };
    match entries.iter().position(is_me) {
        Some(i) => entries[i] = mine,
        None => entries.push(mine),
    }
    write_managed(&mut result, &entries);
    Ok(result)
}

/// Builds the 409 returned for apply conflicts, worded like the API server.
pub fn apply_conflict_error(plural: &str, group: &str, name: &str, conflicts: &[(String, String, String)]) -> ApiError {
    let mut by_manager: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for (manager, field, api_version) in conflicts {
        by_manager.entry((manager, api_version)).or_default().push(field);
    }
    let message = if conflicts.len() == 1 {
        let (manager, field, api_version) = &conflicts[0];
        format!("Apply failed with 1 conflict: conflict with \"{manager}\" using {api_version}: {field}")
    } else {
        let parts: Vec<String> = by_manager
            .iter()
            .map(|((m, v), fields)| {
                let list: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
                format!("conflicts with \"{m}\" using {v}:\n{}", list.join("\n"))
            })
            .collect();
        format!("Apply failed with {} conflicts: {}", conflicts.len(), parts.join("\n"))
    };
    let causes = conflicts
        .iter()
        .map(|(m, f, v)| Cause::new("FieldManagerConflict", f.clone(), format!("conflict with \"{m}\" using {v}")))
        .collect();
    ApiError::apply_conflict(plural, group, name, message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            now: "2025-01-01T00:00:00Z",
            scope: Scope::Main { status_is_subresource: false },
        }
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = leaf_paths(&json!({"data": {"a": "x", "b": "y"}, "metadata": {"labels": {"l": "1"}}}));
        assert_eq!(decode_fields(&encode_fields(&set)), set);
    }

    #[test]
    fn apply_conflicts_name_the_other_manager_and_force_takes_ownership() {
        let applied_a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "a"}});
        let live = server_side_apply(None, &applied_a, &writer("alice"), false).unwrap_or_else(|c| panic!("{c:?}"));
        let applied_b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "b"}});
        let conflicts = server_side_apply(Some(&live), &applied_b, &writer("bob"), false).err().unwrap_or_default();
        assert_eq!(conflicts, vec![("alice".to_string(), ".data.k".to_string(), "v1".to_string())]);
        let forced =
            server_side_apply(Some(&live), &applied_b, &writer("bob"), true).unwrap_or_else(|c| panic!("{c:?}"));
        assert_eq!(forced["data"]["k"], "b");
        let managers: Vec<String> = read_managed(&forced).into_iter().map(|e| e.manager).collect();
        assert_eq!(managers, vec!["bob".to_string()]);
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let first = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let live = server_side_apply(None, &first, &writer("m"), false).unwrap_or_else(|c| panic!("{c:?}"));
        let second = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let out = server_side_apply(Some(&live), &second, &writer("m"), false).unwrap_or_else(|c| panic!("{c:?}"));
        assert_eq!(out["data"], json!({"a": "1"}));
    }

    #[test]
    fn strategic_merge_handles_directives_and_keyed_lists() {
        let mut target = json!({"metadata": {"finalizers": ["a"]}, "data": {"x": "1", "y": "2"},
            "items": [{"name": "one", "v": 1}, {"name": "two", "v": 2}]});
        let patch = json!({"metadata": {"finalizers": ["b"]}, "data": {"x": null, "z": "3"},
            "$setElementOrder/items": [{"name": "one"}],
            "items": [{"name": "one", "v": 10}, {"name": "two", "$patch": "delete"}]});
        strategic_merge(&mut target, &patch);
        assert_eq!(target["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(target["data"], json!({"y": "2", "z": "3"}));
        assert_eq!(target["items"], json!([{"name": "one", "v": 10}]));
    }
}
