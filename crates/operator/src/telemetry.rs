//! Logging setup: tracing with a text or JSON formatter.
//!
//! JSON lines carry the event's fields, the current span (`span`) and every enclosing span (`spans`), so each line
//! logged during a reconcile names the object (`reconcile{object}`) and, inside an ARM call, its request id
//! (`arm_call{operation,request_id}`).

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::cli::{LogArgs, LogFormat};

/// Errors while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    InvalidFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global tracing subscriber.
pub fn init(args: &LogArgs) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&args.log_filter)
        .map_err(|source| TelemetryError::InvalidFilter { filter: args.log_filter.clone(), source })?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match args.log_format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(json_layer(std::io::stderr)).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

/// The JSON formatter `--log-format json` installs, writing to `writer` (tests capture it).
pub fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer().json().with_current_span(true).with_span_list(true).with_writer(writer)
}
