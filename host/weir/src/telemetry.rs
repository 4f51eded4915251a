//! OpenTelemetry tracing: weir's spans (`weir_core::trace`) exported over OTLP, gRPC or
//! HTTP/protobuf, configured by the standard `OTEL_*` environment variables and the
//! configuration file's `telemetry.tracing`. Off unless one of them asks for it; while
//! off no span is made (see `weir_core::trace::enabled`).

use serde::Deserialize;
#[cfg(feature = "otel")]
use std::time::Duration;

/// `telemetry` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OpenTelemetry tracing.
    #[serde(default)]
    pub tracing: TracingConfig,
}

/// `telemetry.tracing`; each field gives way to its `OTEL_*` environment variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Export spans (also turned on by `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none` turn it off).
    #[serde(default)]
    pub enabled: bool,
    /// The collector's OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`; default
    /// `http://localhost:4317` for gRPC, `http://localhost:4318` for HTTP, to which
    /// `/v1/traces` is added).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (`OTEL_EXPORTER_OTLP_PROTOCOL`; default
    /// `http/protobuf`, as the OpenTelemetry specification says).
    pub protocol: Option<String>,
    /// The `service.name` resource attribute (`OTEL_SERVICE_NAME`; default `weir`).
    pub service_name: Option<String>,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on` (default),
    /// `parentbased_always_off` or `parentbased_traceidratio` (`OTEL_TRACES_SAMPLER`).
    pub sampler: Option<String>,
    /// The ratio of the `*traceidratio` samplers, 0 to 1 (`OTEL_TRACES_SAMPLER_ARG`;
    /// default 1).
    pub sampler_arg: Option<f64>,
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A setting has a value weir does not know.
    #[error("{setting}: {reason}")]
    Setting {
        /// The setting (environment variable or configuration field).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The exporter could not be built.
    #[cfg(feature = "otel")]
    #[error("cannot build the OTLP span exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// This weir was built without the `otel` feature.
    #[error("tracing is configured, but this weir was built without the `otel` feature")]
    NotBuilt,
}

/// What the settings resolve to, environment first.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The traces endpoint, complete (with `/v1/traces` for HTTP).
    pub endpoint: String,
    /// gRPC (else HTTP/protobuf).
    pub grpc: bool,
    /// `service.name`, unless `OTEL_SERVICE_NAME` gives it (the SDK reads that).
    pub service_name: Option<String>,
    /// The sampler's name.
    pub sampler: String,
    /// The ratio for the ratio samplers.
    pub ratio: f64,
}

/// The tracing settings after the `OTEL_*` variables of `env`, or `None` when tracing is
/// off.
pub fn resolve(
    config: &TracingConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Resolved>, TelemetryError> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base_endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
    let on = config.enabled || traces_endpoint.is_some() || base_endpoint.is_some();
    if disabled || !on {
        return Ok(None);
    }
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .or_else(|| config.protocol.clone())
        .unwrap_or_else(|| "http/protobuf".to_owned());
    let grpc = match protocol.as_str() {
        "grpc" => true,
        "http/protobuf" => false,
        other => {
            return Err(TelemetryError::Setting {
                setting: "OTEL_EXPORTER_OTLP_PROTOCOL (telemetry.tracing.protocol)",
                reason: format!("`{other}`: use `grpc` or `http/protobuf`"),
            })
        }
    };
    let endpoint = match (
        traces_endpoint,
        base_endpoint.or_else(|| config.endpoint.clone()),
    ) {
        // The signal-specific variable is the whole URL.
        (Some(url), _) => url,
        (None, Some(base)) if grpc => base,
        (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
        (None, None) if grpc => "http://localhost:4317".to_owned(),
        (None, None) => "http://localhost:4318/v1/traces".to_owned(),
    };
    let sampler = var("OTEL_TRACES_SAMPLER")
        .or_else(|| config.sampler.clone())
        .unwrap_or_else(|| "parentbased_always_on".to_owned());
    const SAMPLERS: [&str; 6] = [
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ];
    if !SAMPLERS.contains(&sampler.as_str()) {
        return Err(TelemetryError::Setting {
            setting: "OTEL_TRACES_SAMPLER (telemetry.tracing.sampler)",
            reason: format!("`{sampler}`: use one of {}", SAMPLERS.join(", ")),
        });
    }
    let ratio = match var("OTEL_TRACES_SAMPLER_ARG") {
        Some(arg) => arg
            .trim()
            .parse::<f64>()
            .map_err(|e| TelemetryError::Setting {
                setting: "OTEL_TRACES_SAMPLER_ARG",
                reason: format!("`{arg}`: {e}"),
            })?,
        None => config.sampler_arg.unwrap_or(1.0),
    };
    if !(0.0..=1.0).contains(&ratio) {
        return Err(TelemetryError::Setting {
            setting: "OTEL_TRACES_SAMPLER_ARG (telemetry.tracing.sampler_arg)",
            reason: format!("{ratio} is not between 0 and 1"),
        });
    }
    let service_name = match var("OTEL_SERVICE_NAME") {
        Some(_) => None,
        None => Some(
            config
                .service_name
                .clone()
                .unwrap_or_else(|| "weir".to_owned()),
        ),
    };
    Ok(Some(Resolved {
        endpoint,
        grpc,
        service_name,
        sampler,
        ratio,
    }))
}

/// How long one export may take.
#[cfg(feature = "otel")]
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running exporter: the `tracing` layer to install and the provider to shut down
/// (which flushes the spans still buffered).
#[cfg(feature = "otel")]
pub struct Tracing {
    /// The provider (keep it; shutting it down flushes).
    pub provider: opentelemetry_sdk::trace::SdkTracerProvider,
    /// Its tracer, for `tracing_opentelemetry::layer().with_tracer`.
    pub tracer: opentelemetry_sdk::trace::SdkTracer,
}

/// Builds the exporter for `settings`. Call it inside the tokio runtime: batches are
/// exported on it.
#[cfg(feature = "otel")]
pub fn start(settings: &Resolved) -> Result<Tracing, TelemetryError> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    use opentelemetry_sdk::trace::{
        span_processor_with_async_runtime::BatchSpanProcessor, Sampler, SdkTracerProvider,
    };
    let exporter = if settings.grpc {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&settings.endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
    } else {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(&settings.endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(Default::default())
            .build()
    }
    .map_err(TelemetryError::Exporter)?;
    let ratio = settings.ratio;
    let sampler = match settings.sampler.as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Some(name) = &settings.service_name {
        resource = resource.with_service_name(name.clone());
    }
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("weir");
    weir_core::trace::set_enabled(true);
    Ok(Tracing { provider, tracer })
}

/// Without the `otel` feature there is no exporter.
#[cfg(not(feature = "otel"))]
pub fn start(_: &Resolved) -> Result<std::convert::Infallible, TelemetryError> {
    Err(TelemetryError::NotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_by_default_and_on_by_the_standard_variables() {
        let config = TracingConfig::default();
        assert_eq!(resolve(&config, &env(&[])).unwrap(), None);
        let on = resolve(
            &config,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(on.endpoint, "http://collector:4318/v1/traces");
        assert!(!on.grpc);
        assert_eq!((on.sampler.as_str(), on.ratio), ("traceidratio", 0.25));
        assert_eq!(on.service_name.as_deref(), Some("weir"));
        let grpc = resolve(
            &config,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_SERVICE_NAME", "edge-router"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (grpc.endpoint.as_str(), grpc.grpc),
            ("http://collector:4317", true)
        );
        assert_eq!(
            grpc.service_name, None,
            "the SDK reads OTEL_SERVICE_NAME itself"
        );
        let off = resolve(
            &config,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(off, None);
    }

    #[test]
    fn the_environment_wins_over_the_file_and_bad_values_are_named() {
        let config = TracingConfig {
            enabled: true,
            endpoint: Some("http://file:4317".into()),
            protocol: Some("grpc".into()),
            ..TracingConfig::default()
        };
        let r = resolve(&config, &env(&[])).unwrap().unwrap();
        assert_eq!((r.endpoint.as_str(), r.grpc), ("http://file:4317", true));
        let r = resolve(
            &config,
            &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.endpoint, "http://file:4317/v1/traces");
        for (vars, named) in [
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")][..],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "sometimes")][..],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                &[("OTEL_TRACES_SAMPLER_ARG", "2")][..],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
        ] {
            let vars: &'static [(&'static str, &'static str)] = vars;
            let err = resolve(&config, &env(vars)).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }
}
