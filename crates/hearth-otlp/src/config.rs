//! What the exporter is told: where to send, how, and how patiently.
//!
//! There is no default endpoint. A sender that exports to a guessed local
//! address when nobody asked for it fills logs with connection errors on
//! every machine that runs no collector; Hearth exports only when an
//! endpoint is configured, and [`ExporterConfig::from_env`] says
//! [`EnvConfig::NoEndpoint`] otherwise.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

/// Path of the profiles signal under an OTLP/HTTP base URL.
pub const HTTP_PROFILES_PATH: &str = "v1development/profiles";

/// Wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/gRPC (`ProfilesService/Export`), usually port 4317.
    ///
    /// The default because profiles are large binary payloads that every
    /// collector receives on gRPC, and because host profilers that feed
    /// collectors today speak gRPC. (The OTLP spec recommends
    /// `http/protobuf` as the SDK default; set `OTEL_EXPORTER_OTLP_PROTOCOL`
    /// to pick it.)
    #[default]
    Grpc,
    /// OTLP/HTTP with a protobuf body (`POST …/v1development/profiles`),
    /// usually port 4318.
    HttpProtobuf,
}

/// Body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Gzip: `grpc-encoding: gzip` or `Content-Encoding: gzip`.
    /// Profiles (string tables of symbol names) shrink several-fold.
    Gzip,
    /// No compression: the OTLP spec's default.
    #[default]
    None,
}

/// TLS material, all PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Trust only this CA (bundle) for the collector's certificate. Without
    /// it the system's trust store is used.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate chain for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// The OTLP `insecure` option: for a gRPC endpoint written without a
    /// scheme (`collector:4317`), `true` means plaintext and `false` TLS.
    /// A scheme always wins (`http://` plaintext, `https://` TLS). It never
    /// turns off certificate verification.
    pub insecure: bool,
}

/// Retry timing. The defaults are the collector's own exporter defaults,
/// so that an operator who knows one knows the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// First retry delay (before jitter). Default 5 s: long enough for a
    /// restarting collector to come back, short enough that a blip costs
    /// one reporting interval at most.
    pub initial: Duration,
    /// Growth per consecutive failure. Default 1.5.
    pub multiplier: f64,
    /// Largest delay between attempts (before jitter). Default 30 s.
    pub max: Duration,
    /// Random spread, as a fraction: 0.5 gives delays in ±50%. Spreads
    /// the retries of a fleet of agents after a collector restart.
    pub jitter: f64,
    /// A request older than this (since it was submitted) is dropped
    /// instead of retried. Default 300 s: a profile that old is of little
    /// use, and holding it holds memory.
    pub max_elapsed: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(5),
            multiplier: 1.5,
            max: Duration::from_secs(30),
            jitter: 0.5,
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// Default per-attempt timeout (the OTLP spec's 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default queue bound: 64 MiB. Requests older than
/// [`Backoff::max_elapsed`] are dropped anyway, and a busy node that reports
/// every 10 s with requests of about 2 MiB produces about 60 MiB in those
/// 300 s; quieter nodes never come near the bound.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;
/// Default period of the failure summaries: one line a minute at most.
pub const DEFAULT_LOG_PERIOD: Duration = Duration::from_secs(60);

/// Everything the exporter needs. Build it with [`ExporterConfig::new`] or
/// [`ExporterConfig::from_env`] and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterConfig {
    /// For gRPC, `http(s)://host:port` (or `host:port`, see
    /// [`TlsConfig::insecure`]). For HTTP, the full URL requests are
    /// POSTed to, used as is.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every request (gRPC metadata or HTTP headers).
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    /// Per attempt, connection included. A collector that never answers
    /// costs one timeout, then the attempt counts as failed and is retried.
    pub timeout: Duration,
    pub tls: TlsConfig,
    /// Bound of the queue of requests waiting to be sent, in bytes of
    /// encoded requests; the oldest are dropped first. Memory held is at
    /// most this plus the one request in flight.
    pub queue_bytes: usize,
    pub backoff: Backoff,
    /// Period of the failure summaries in the log.
    pub log_period: Duration,
}

impl ExporterConfig {
    /// A configuration with the defaults for everything but the endpoint.
    pub fn new(protocol: Protocol, endpoint: impl Into<String>) -> Self {
        ExporterConfig {
            endpoint: endpoint.into(),
            protocol,
            headers: Vec::new(),
            compression: Compression::None,
            timeout: DEFAULT_TIMEOUT,
            tls: TlsConfig::default(),
            queue_bytes: DEFAULT_QUEUE_BYTES,
            backoff: Backoff::default(),
            log_period: DEFAULT_LOG_PERIOD,
        }
    }

    /// Reads the standard OTLP exporter variables through `get` (pass
    /// `|k| std::env::var(k).ok()`; tests pass a map).
    ///
    /// Every `OTEL_EXPORTER_OTLP_X` has a profiles-only
    /// `OTEL_EXPORTER_OTLP_PROFILES_X` that wins over it. An empty value
    /// counts as unset. For OTLP/HTTP the generic endpoint is a base URL
    /// that gets `v1development/profiles` appended; the profiles endpoint
    /// is used as is. `OTEL_SDK_DISABLED=true` (case-insensitive; any other
    /// value means false) turns export off. Values that cannot be
    /// understood are errors rather than guesses, except booleans, which
    /// the spec says fall back to false (logged as a warning).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<EnvConfig, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let pick = |suffix: &str| -> Option<(String, String)> {
            let specific = format!("OTEL_EXPORTER_OTLP_PROFILES_{suffix}");
            if let Some(v) = var(&specific) {
                return Some((specific, v));
            }
            let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
            var(&generic).map(|v| (generic, v))
        };

        if let Some(v) = var("OTEL_SDK_DISABLED") {
            if parse_bool("OTEL_SDK_DISABLED", &v) {
                return Ok(EnvConfig::SdkDisabled);
            }
        }

        let protocol = match pick("PROTOCOL") {
            None => Protocol::Grpc,
            Some((name, v)) => match v.trim() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => {
                    return Err(ConfigError::UnsupportedProtocol {
                        var: name,
                        value: v,
                    })
                }
                _ => {
                    return Err(ConfigError::UnknownProtocol {
                        var: name,
                        value: v,
                    })
                }
            },
        };

        let endpoint = if let Some(v) = var("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT") {
            v.trim().to_string()
        } else if let Some(v) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let v = v.trim();
            match protocol {
                Protocol::Grpc => v.to_string(),
                Protocol::HttpProtobuf => http_signal_url(v),
            }
        } else {
            return Ok(EnvConfig::NoEndpoint);
        };

        let mut config = ExporterConfig::new(protocol, endpoint);

        if let Some((name, v)) = pick("HEADERS") {
            config.headers = parse_headers(&name, &v)?;
        }
        if let Some((name, v)) = pick("TIMEOUT") {
            config.timeout = match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError::InvalidTimeout {
                        var: name,
                        value: v,
                    })
                }
            };
        }
        if let Some((name, v)) = pick("COMPRESSION") {
            config.compression = match v.trim() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => {
                    return Err(ConfigError::UnknownCompression {
                        var: name,
                        value: v,
                    })
                }
            };
        }
        config.tls.ca_cert = pick("CERTIFICATE").map(|(_, v)| PathBuf::from(v.trim()));
        config.tls.client_cert = pick("CLIENT_CERTIFICATE").map(|(_, v)| PathBuf::from(v.trim()));
        config.tls.client_key = pick("CLIENT_KEY").map(|(_, v)| PathBuf::from(v.trim()));
        if let Some((name, v)) = pick("INSECURE") {
            config.tls.insecure = parse_bool(&name, &v);
        }
        // Fail now, not on the first export.
        config.target()?;
        Ok(EnvConfig::Export(config))
    }

    /// Checks the endpoint against the protocol and TLS settings and says
    /// where requests go.
    pub(crate) fn target(&self) -> Result<Target, ConfigError> {
        let raw = self.endpoint.trim();
        let bad = |reason: &str| ConfigError::InvalidEndpoint {
            endpoint: raw.to_string(),
            reason: reason.to_string(),
        };
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else if self.protocol == Protocol::Grpc {
            let scheme = if self.tls.insecure { "http" } else { "https" };
            format!("{scheme}://{raw}")
        } else {
            return Err(bad("an OTLP/HTTP endpoint needs http:// or https://"));
        };
        let uri: Uri = with_scheme.parse().map_err(|e| bad(&format!("{e}")))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if self.protocol == Protocol::Grpc {
            let path = uri.path();
            if !(path.is_empty() || path == "/") || uri.query().is_some() {
                return Err(bad("a gRPC endpoint is scheme://host:port, without a path"));
            }
        }
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            return Err(ConfigError::IncompleteClientCert);
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| ConfigError::InvalidHeader { name: k.clone() })?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| ConfigError::InvalidHeader { name: k.clone() })?;
            headers.push((name, value));
        }
        Ok(Target { uri, tls, headers })
    }
}

/// A checked endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub uri: Uri,
    pub tls: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the environment asks for.
// Made once at start-up: boxing the configuration would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum EnvConfig {
    /// Export with this configuration.
    Export(ExporterConfig),
    /// No endpoint configured: do not export (and open no connection).
    NoEndpoint,
    /// `OTEL_SDK_DISABLED=true`.
    SdkDisabled,
}

impl EnvConfig {
    /// The configuration, if export is wanted.
    pub fn into_config(self) -> Option<ExporterConfig> {
        match self {
            EnvConfig::Export(c) => Some(c),
            EnvConfig::NoEndpoint | EnvConfig::SdkDisabled => None,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}={value:?}: unknown protocol (expected grpc or http/protobuf)")]
    UnknownProtocol { var: String, value: String },
    #[error("{var}={value:?}: OTLP/HTTP with JSON is not supported (use grpc or http/protobuf)")]
    UnsupportedProtocol { var: String, value: String },
    #[error("{var}={value:?}: unknown compression (expected gzip or none)")]
    UnknownCompression { var: String, value: String },
    #[error("{var}={value:?}: the timeout must be a positive integer of milliseconds")]
    InvalidTimeout { var: String, value: String },
    #[error("{var}: entry {entry:?} is not key=value")]
    InvalidHeaderEntry { var: String, entry: String },
    #[error("header {name:?} is not a valid HTTP header name or value")]
    InvalidHeader { name: String },
    #[error("endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("a client certificate needs a client key and the other way round")]
    IncompleteClientCert,
    #[error("cannot read {what} {path:?}: {reason}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("backoff: {0}")]
    InvalidBackoff(String),
    #[error("queue_bytes must be positive")]
    ZeroQueue,
}

/// The spec's boolean: only `true` (any case) is true; anything but
/// `false` is reported, then taken as false.
fn parse_bool(name: &str, value: &str) -> bool {
    let v = value.trim();
    if v.eq_ignore_ascii_case("true") {
        return true;
    }
    if !v.eq_ignore_ascii_case("false") {
        tracing::warn!("{name}={value:?} is not true or false; taking it as false");
    }
    false
}

/// `k=v,k2=v2`, values percent-decoded (a `,` or `=` in a value is
/// written `%2C`, `%3D`).
fn parse_headers(var: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for entry in value.split(',') {
        if entry.trim().is_empty() {
            continue;
        }
        let bad = || ConfigError::InvalidHeaderEntry {
            var: var.to_string(),
            entry: entry.to_string(),
        };
        let (k, v) = entry.split_once('=').ok_or_else(bad)?;
        let k = percent_encoding::percent_decode_str(k.trim())
            .decode_utf8()
            .map_err(|_| bad())?;
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| bad())?;
        if k.is_empty() {
            return Err(bad());
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// The profiles URL under an OTLP/HTTP base URL: the signal path is
/// appended to whatever path the base has.
pub fn http_signal_url(base: &str) -> String {
    if base.ends_with('/') {
        format!("{base}{HTTP_PROFILES_PATH}")
    } else {
        format!("{base}/{HTTP_PROFILES_PATH}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<EnvConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExporterConfig::from_env(|k| map.get(k).cloned())
    }

    fn export(pairs: &[(&str, &str)]) -> ExporterConfig {
        match env(pairs) {
            Ok(EnvConfig::Export(c)) => c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        assert_eq!(env(&[]), Ok(EnvConfig::NoEndpoint));
        assert_eq!(
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]),
            Ok(EnvConfig::NoEndpoint)
        );
        // Other settings alone do not invent an endpoint.
        assert_eq!(
            env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Ok(EnvConfig::NoEndpoint)
        );
    }

    #[test]
    fn sdk_disabled_only_by_true() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        for v in ["true", "TRUE", "True"] {
            assert_eq!(
                env(&[ep, ("OTEL_SDK_DISABLED", v)]),
                Ok(EnvConfig::SdkDisabled)
            );
        }
        for v in ["false", "1", "yes", ""] {
            assert!(
                matches!(
                    env(&[ep, ("OTEL_SDK_DISABLED", v)]),
                    Ok(EnvConfig::Export(_))
                ),
                "{v}"
            );
        }
    }

    #[test]
    fn defaults() {
        let c = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.endpoint, "http://c:4317");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.queue_bytes, 64 << 20);
        assert_eq!(c.backoff, Backoff::default());
        assert!(c.headers.is_empty());
    }

    #[test]
    fn http_endpoint_rules() {
        let http = ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        let c = export(&[http, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        assert_eq!(c.endpoint, "http://c:4318/v1development/profiles");
        let c = export(&[http, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]);
        assert_eq!(c.endpoint, "http://c:4318/v1development/profiles");
        let c = export(&[http, ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw/otlp")]);
        assert_eq!(c.endpoint, "https://gw/otlp/v1development/profiles");
        // The per-signal endpoint is used as is, and wins.
        let c = export(&[
            http,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT",
                "http://p:9999/custom",
            ),
        ]);
        assert_eq!(c.endpoint, "http://p:9999/custom");
        // gRPC takes the generic endpoint as is.
        let c = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")]);
        assert_eq!(c.endpoint, "https://c:4317");
    }

    #[test]
    fn per_signal_overrides_generic() {
        let c = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_PROFILES_HEADERS", "b=2"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/g/ca.pem"),
            ("OTEL_EXPORTER_OTLP_PROFILES_CERTIFICATE", "/p/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/g/c.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/g/k.pem"),
        ]);
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.endpoint, "http://c:4317/v1development/profiles");
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.headers, vec![("b".to_string(), "2".to_string())]);
        assert_eq!(c.tls.ca_cert, Some(PathBuf::from("/p/ca.pem")));
        assert_eq!(c.tls.client_cert, Some(PathBuf::from("/g/c.pem")));
        assert_eq!(c.tls.client_key, Some(PathBuf::from("/g/k.pem")));
    }

    #[test]
    fn headers_are_percent_decoded() {
        let c = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                " api-key = abc%3D%3D , x-tenant=a%2Cb ,,authorization=Basic%20Zm9v",
            ),
        ]);
        assert_eq!(
            c.headers,
            vec![
                ("api-key".to_string(), "abc==".to_string()),
                ("x-tenant".to_string(), "a,b".to_string()),
                ("authorization".to_string(), "Basic Zm9v".to_string()),
            ]
        );
        assert!(matches!(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ]),
            Err(ConfigError::InvalidHeaderEntry { .. })
        ));
        assert!(matches!(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=1"),
            ]),
            Err(ConfigError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        assert!(matches!(
            env(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")]),
            Err(ConfigError::UnknownProtocol { .. })
        ));
        assert!(matches!(
            env(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            Err(ConfigError::UnsupportedProtocol { .. })
        ));
        assert!(matches!(
            env(&[ep, ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]),
            Err(ConfigError::UnknownCompression { .. })
        ));
        for t in ["10s", "-5", "0", "1.5"] {
            assert!(
                matches!(
                    env(&[ep, ("OTEL_EXPORTER_OTLP_TIMEOUT", t)]),
                    Err(ConfigError::InvalidTimeout { .. })
                ),
                "{t}"
            );
        }
        assert!(matches!(
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c:4317")]),
            Err(ConfigError::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317/some/path")]),
            Err(ConfigError::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318"),
            ]),
            Err(ConfigError::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            env(&[ep, ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")]),
            Err(ConfigError::IncompleteClientCert)
        ));
    }

    #[test]
    fn insecure_only_matters_without_scheme() {
        let target = |ep: &str, insecure: &str| {
            let c = export(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", ep),
                ("OTEL_EXPORTER_OTLP_INSECURE", insecure),
            ]);
            let t = c.target().expect("valid");
            (t.tls, t.uri.to_string())
        };
        assert_eq!(
            target("c:4317", "true"),
            (false, "http://c:4317/".to_string())
        );
        assert_eq!(
            target("c:4317", "false"),
            (true, "https://c:4317/".to_string())
        );
        // Not a boolean: false (TLS), as the spec says.
        assert_eq!(
            target("c:4317", "yes"),
            (true, "https://c:4317/".to_string())
        );
        assert!(target("https://c:4317", "true").0);
        assert!(!target("http://c:4317", "false").0);
    }
}
