//! Logging, and with the `otlp` cargo feature, span export over OTLP/gRPC.
//!
//! Export starts only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard
//! OpenTelemetry variables configure the rest: `OTEL_SERVICE_NAME`, headers, timeouts).

use std::io::IsTerminal;

use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{LevelFilter, filter_fn},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::LogFormat;

/// Keeps span export running; dropping it flushes what is buffered.
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "cannot flush exported spans");
        }
    }
}

/// What is logged without `RUST_LOG`: info, but PostgreSQL's notices only from warnings up
/// (migrations' `IF NOT EXISTS` statements otherwise log "already exists, skipping" at
/// every start).
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// Installs the global subscriber: `RUST_LOG` filtering (default [`DEFAULT_FILTER`]),
/// lines in `format`, and OTLP export when compiled in and configured.
///
/// Log lines carry the per-request span only when `RUST_LOG` asks for debug events, the
/// only ones written inside it without naming their request: the line writer formats a
/// span's fields the moment the span opens, which showed in profiles of a check load, for
/// lines that are never written at info level. Span export sees
/// every span either way.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let debugging = filter.max_level_hint().is_none_or(|most_verbose| most_verbose >= LevelFilter::DEBUG);
    let spans_in_lines = filter_fn(move |metadata| debugging || !metadata.is_span());
    let lines: BoxedLayer = match format {
        // Colour codes only where someone reads them: a log file or journald gets plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .with_filter(spans_in_lines)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_filter(spans_in_lines).boxed(),
    };
    #[cfg(feature = "otlp")]
    {
        let export = otlp::layer();
        let (layers, provider, problem) = match export {
            Ok(Some((export, provider))) => (vec![lines, export], Some(provider), None),
            Ok(None) => (vec![lines], None, None),
            Err(err) => (vec![lines], None, Some(err)),
        };
        tracing_subscriber::registry().with(layers).with(filter).init();
        if let Some(err) = problem {
            tracing::warn!(error = %err, "OTLP span export is disabled");
        }
        Telemetry { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        tracing_subscriber::registry().with(vec![lines]).with(filter).init();
        Telemetry {}
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
    use tracing_subscriber::Layer;

    use super::BoxedLayer;

    /// The export layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` asks for one.
    pub fn layer() -> Result<Option<(BoxedLayer, SdkTracerProvider)>, opentelemetry_otlp::ExporterBuildError> {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("grantd").build())
            .build();
        let tracer = provider.tracer("grantd");
        Ok(Some((tracing_opentelemetry::layer().with_tracer(tracer).boxed(), provider)))
    }
}
