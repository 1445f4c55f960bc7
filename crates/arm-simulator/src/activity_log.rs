//! ActivityLogs_List (Microsoft.Insights, api-version 2015-04-01) as Azure serves it.
//!
//! - **Ingestion delay.** An event is visible only once it has been ingested: its `submissionTimestamp` is its
//!   `eventTimestamp` plus the simulator's activity-log delay (`SimConfig::activity_log_delay`, the sandbox flag
//!   `--activity-log-delay`, default 5 minutes; Learn: "Azure Monitor activity log ... events can take up to several
//!   minutes to appear"). Queries filter on `eventTimestamp`, so a client that only looks back one interval misses
//!   events that arrive late.
//! - **`$filter`.** Only the patterns the spec (`activityLogs_API.json`) allows: `eventTimestamp ge '…' and
//!   eventTimestamp le '…'`, optionally followed by exactly one of `resourceGroupName eq`, `resourceUri eq`,
//!   `resourceProvider eq` or `correlationId eq`. Anything else, a start more than 90 days back (the log's retention)
//!   or a timestamp .NET cannot parse (more than 7 fractional digits) is answered 400 with the service's own body,
//!   a top-level `{"code", "message"}` (no `error` wrapper).
//! - **`$select`** limits each event to the named fields (case-insensitive, as the recorded request spells them in
//!   PascalCase and the answer in camelCase).
//! - **Paging** with `nextLink` / `$skipToken`, newest first.

use std::time::Duration;

use http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::engine::{Inner, Req};
use super::model::{ActivityEvent, id_key};
use super::reply::Reply;

/// How far back the activity log keeps events.
pub const RETENTION_DAYS: i64 = 90;

/// Default ingestion delay (the sandbox flag's default).
pub const DEFAULT_DELAY: Duration = Duration::from_secs(300);

/// The service's error answer: 400 with a top-level `{code, message}`.
fn bad_request(message: impl Into<String>) -> Reply {
    Reply::json(StatusCode::BAD_REQUEST, json!({"code": "BadRequest", "message": message.into()}))
}

/// A parsed `$filter`.
#[derive(Debug, PartialEq)]
pub(crate) struct Filter {
    pub from: Timestamp,
    pub to: Timestamp,
    pub narrow: Option<(Narrow, String)>,
}

/// The one optional narrowing clause.
#[derive(Debug, PartialEq, Clone, Copy)]
pub(crate) enum Narrow {
    ResourceGroup,
    ResourceUri,
    ResourceProvider,
    CorrelationId,
}

fn split_and(filter: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut rest = filter.trim();
    loop {
        match rest.to_ascii_lowercase().find(" and ") {
            Some(i) => {
                out.push(rest[..i].trim());
                rest = rest[i + 5..].trim();
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

/// `field op 'value'` → (field, op, value).
fn clause(text: &str) -> Option<(&str, &str, &str)> {
    let (field, rest) = text.trim().split_once(' ')?;
    let (op, value) = rest.trim().split_once(' ')?;
    let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    Some((field, op, value))
}

/// A timestamp as the service parses it: ISO 8601 with at most 7 fractional digits (.NET `DateTime`).
fn timestamp(value: &str) -> Result<Timestamp, String> {
    let fraction = value.split_once('.').map(|(_, f)| f.chars().take_while(char::is_ascii_digit).count());
    if fraction.is_some_and(|n| n > 7) {
        return Err(format!("The value '{value}' of eventTimestamp is not a valid date and time."));
    }
    value
        .parse::<Timestamp>()
        .map_err(|_| format!("The value '{value}' of eventTimestamp is not a valid date and time."))
}

/// Parses a `$filter` against the spec's patterns.
pub(crate) fn parse_filter(filter: &str, now: Timestamp) -> Result<Filter, String> {
    let allowed = "The $filter must be \"eventTimestamp ge '<start>' and eventTimestamp le '<end>'\", optionally followed \
                   by \"and\" and one of resourceGroupName eq, resourceUri eq, resourceProvider eq or correlationId eq.";
    let clauses = split_and(filter);
    if !(2..=3).contains(&clauses.len()) {
        return Err(format!("The $filter '{filter}' is not supported. {allowed}"));
    }
    let parsed: Vec<(&str, &str, &str)> = clauses
        .iter()
        .map(|c| clause(c).ok_or_else(|| format!("The $filter clause '{c}' is not supported. {allowed}")))
        .collect::<Result<_, _>>()?;
    let field =
        |i: usize, name: &str, op: &str| parsed[i].0.eq_ignore_ascii_case(name) && parsed[i].1.eq_ignore_ascii_case(op);
    if !field(0, "eventTimestamp", "ge") || !field(1, "eventTimestamp", "le") {
        return Err(format!("The $filter '{filter}' is not supported. {allowed}"));
    }
    let from = timestamp(parsed[0].2)?;
    let to = timestamp(parsed[1].2)?;
    if from > to {
        return Err("The start time of the $filter is after its end time.".into());
    }
    let oldest = now.checked_sub(SignedDuration::from_hours(24 * RETENTION_DAYS)).unwrap_or(Timestamp::MIN);
    if from < oldest {
        return Err(format!(
            "The start time '{}' is more than {RETENTION_DAYS} days in the past; the activity log keeps {RETENTION_DAYS} days of events.",
            parsed[0].2
        ));
    }
    let narrow = match parsed.get(2) {
        None => None,
        Some((name, op, value)) if op.eq_ignore_ascii_case("eq") => {
            let kind = match name.to_ascii_lowercase().as_str() {
                "resourcegroupname" => Narrow::ResourceGroup,
                "resourceuri" => Narrow::ResourceUri,
                "resourceprovider" => Narrow::ResourceProvider,
                "correlationid" => Narrow::CorrelationId,
                _ => return Err(format!("The $filter field '{name}' is not supported. {allowed}")),
            };
            Some((kind, (*value).to_owned()))
        }
        Some((_, op, _)) => return Err(format!("The $filter operator '{op}' is not supported. {allowed}")),
    };
    Ok(Filter { from, to, narrow })
}

fn matches(e: &ActivityEvent, narrow: &Option<(Narrow, String)>) -> bool {
    let Some((kind, value)) = narrow else { return true };
    match kind {
        Narrow::ResourceGroup => e.resource_group.eq_ignore_ascii_case(value),
        Narrow::ResourceUri => id_key(&e.resource_id) == id_key(value),
        Narrow::ResourceProvider => e.operation.split('/').next().is_some_and(|p| p.eq_ignore_ascii_case(value)),
        Narrow::CorrelationId => e.body["correlationId"].as_str().is_some_and(|c| c.eq_ignore_ascii_case(value)),
    }
}

/// `$select`: only the named fields, matched case-insensitively, and always the event's `id` (the recorded answer
/// carries it although it was not selected). `ResourceUri`, which the recorded request selects, is the event's
/// resource id under the name `resourceUri`, as the recorded answer shows it.
fn select(body: &Value, fields: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(obj) = body.as_object() {
        if let Some(id) = obj.get("id") {
            out.insert("id".into(), id.clone());
        }
        for f in fields {
            if f.eq_ignore_ascii_case("ResourceUri") {
                if let Some(id) = obj.get("resourceId") {
                    out.insert("resourceUri".into(), id.clone());
                }
            } else if let Some((k, v)) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(f)) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

impl Inner {
    /// When an event becomes visible: its eventTimestamp plus the ingestion delay (at least a millisecond, so
    /// submissionTimestamp is always later than eventTimestamp).
    fn submitted(&self, e: &ActivityEvent) -> Timestamp {
        let ms = i64::try_from(self.knobs.activity_log_delay.as_millis()).unwrap_or(i64::MAX).max(1);
        e.timestamp.checked_add(SignedDuration::from_millis(ms)).unwrap_or(Timestamp::MAX)
    }

    /// ActivityLogs_List for subscription `sub`.
    pub(crate) fn activity_list(&self, req: &Req, sub: &str) -> Reply {
        let Some(raw) = req.q("$filter") else {
            return bad_request("The $filter query parameter is required and must contain 'eventTimestamp ge'.");
        };
        let now = self.sim_now();
        let filter = match parse_filter(raw, now) {
            Ok(f) => f,
            Err(message) => return bad_request(message),
        };
        let fields: Option<Vec<String>> =
            req.q("$select").map(|s| s.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect());
        let items: Vec<Value> = self
            .state
            .activity
            .iter()
            .rev()
            .filter(|e| e.subscription_id.eq_ignore_ascii_case(sub))
            .filter(|e| e.timestamp >= filter.from && e.timestamp <= filter.to)
            .filter(|e| self.submitted(e) <= now)
            .filter(|e| matches(e, &filter.narrow))
            .map(|e| {
                let mut body = e.body.clone();
                body["submissionTimestamp"] = json!(self.submitted(e).to_string());
                match &fields {
                    Some(fields) => select(&body, fields),
                    None => body,
                }
            })
            .collect();
        Reply::ok(self.page(req, items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn only_the_spec_patterns_parse() {
        let base = "eventTimestamp ge '2026-06-01T11:00:00.0000000Z' and eventTimestamp le '2026-06-01T12:00:00Z'";
        let f = parse_filter(base, now()).unwrap();
        assert_eq!(f.narrow, None);
        let f = parse_filter(&format!("{base} and resourceProvider eq 'Microsoft.Storage'"), now()).unwrap();
        assert_eq!(f.narrow, Some((Narrow::ResourceProvider, "Microsoft.Storage".into())));
        for bad in [
            "eventTimestamp ge '2026-06-01T11:00:00Z'".to_owned(),
            format!("{base} and operationName eq 'x'"),
            format!("{base} and resourceGroupName eq 'a' and resourceProvider eq 'b'"),
            format!("{base} and resourceGroupName ne 'a'"),
            "eventTimestamp le '2026-06-01T12:00:00Z' and eventTimestamp ge '2026-06-01T11:00:00Z'".to_owned(),
            "eventTimestamp ge '2026-01-01T00:00:00Z' and eventTimestamp le '2026-06-01T12:00:00Z'".to_owned(),
            "eventTimestamp ge '2026-06-01T11:00:00.123456789Z' and eventTimestamp le '2026-06-01T12:00:00Z'"
                .to_owned(),
            "eventTimestamp ge '2026-06-01T12:00:00Z' and eventTimestamp le '2026-06-01T11:00:00Z'".to_owned(),
        ] {
            assert!(parse_filter(&bad, now()).is_err(), "{bad}");
        }
    }

    #[test]
    fn select_is_case_insensitive() {
        let body = json!({"id": "/e/1", "caller": "a", "eventTimestamp": "t", "claims": {}, "resourceId": "/r"});
        assert_eq!(
            select(&body, &["Caller".into(), "EventTimestamp".into(), "ResourceUri".into()]),
            json!({"id": "/e/1", "caller": "a", "eventTimestamp": "t", "resourceUri": "/r"})
        );
    }
}
