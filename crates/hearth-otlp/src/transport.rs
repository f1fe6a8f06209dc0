//! The two OTLP transports behind one `send`.
//!
//! Both carry the request bytes exactly as submitted: the profiling path
//! encodes once, and neither transport decodes and re-encodes them. That is
//! why gRPC goes through `tonic::client::Grpc` with a pass-through codec on
//! the service's method path rather than the generated `ProfilesServiceClient`,
//! which takes a message: feeding it would mean decoding every request only
//! for tonic to encode it again, twice the CPU and the peak memory of a
//! request per attempt for the same bytes on the wire. The response is
//! decoded with the generated `ExportProfilesServiceResponse`.
//!
//! HTTP uses hyper 1 with hyper-util's client and hyper-rustls: tonic is
//! built on the same hyper and hyper-util, and the Kubernetes client already
//! brings hyper-rustls, so the HTTP transport adds no second HTTP stack.
//! reqwest would wrap these same crates in a larger API (cookies, redirects,
//! proxies from the environment, its own TLS set-up) of which a POST with
//! fixed headers needs nothing; both are well kept.
//!
//! Both build their client lazily on the first attempt and throw it away
//! after a transport-level failure, so that the next attempt opens a new
//! connection and resolves the collector's name again (a collector behind a
//! Service whose pods moved must not keep us on a dead address).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderValue, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceResponse;
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::{Compression, ConfigError, ExporterConfig, Protocol, Target, TlsConfig};
use crate::retry::{self, error_chain, Accepted, AttemptError};

/// The gRPC method, as the OTLP proto defines it.
pub const GRPC_EXPORT_PATH: &str =
    "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";

/// Response bodies larger than this are not read (a collector's answer is
/// a few bytes; a misdirected endpoint may send a whole web page).
const MAX_RESPONSE_BYTES: usize = 64 << 10;

fn user_agent() -> String {
    format!("hearth-otlp/{}", env!("CARGO_PKG_VERSION"))
}

// One per exporter, owned by its worker: size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transport {
    Grpc(GrpcTransport),
    Http(HttpTransport),
}

impl Transport {
    /// Checks everything that can be checked without the network (TLS
    /// files included) and connects nowhere.
    pub fn new(config: &ExporterConfig, target: &Target) -> Result<Self, ConfigError> {
        let tls = if target.tls {
            Some(TlsMaterial::load(&config.tls)?)
        } else {
            None
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &target.headers {
            headers.append(k.clone(), v.clone());
        }
        let gzip = config.compression == Compression::Gzip;
        Ok(match config.protocol {
            Protocol::Grpc => Transport::Grpc(GrpcTransport::new(
                target.uri.clone(),
                tls,
                headers,
                gzip,
                config.timeout,
            )?),
            Protocol::HttpProtobuf => Transport::Http(HttpTransport::new(
                target.uri.clone(),
                tls,
                headers,
                gzip,
                config.timeout,
            )?),
        })
    }

    pub async fn send(&mut self, body: &Bytes) -> Result<Accepted, AttemptError> {
        match self {
            Transport::Grpc(t) => t.send(body).await,
            Transport::Http(t) => t.send(body).await,
        }
    }

    /// Forget the connection; the next attempt starts afresh.
    pub fn reset(&mut self) {
        match self {
            Transport::Grpc(t) => t.channel = None,
            Transport::Http(t) => t.client = None,
        }
    }
}

/// PEM files read and checked at start, so that a wrong path or a bad key
/// is a start-up error and not a failure on every export.
#[derive(Clone)]
pub(crate) struct TlsMaterial {
    ca_pem: Option<Vec<u8>>,
    ca: Vec<CertificateDer<'static>>,
    client: Option<ClientIdentity>,
}

#[derive(Clone)]
struct ClientIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

fn read_file(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::TlsFile {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn pem_certs(
    what: &'static str,
    path: &std::path::Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::TlsFile {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::TlsFile {
            what,
            path: path.to_path_buf(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

impl TlsMaterial {
    fn load(tls: &TlsConfig) -> Result<Self, ConfigError> {
        let (ca_pem, ca) = match &tls.ca_cert {
            Some(path) => {
                let pem = read_file("CA certificate", path)?;
                let certs = pem_certs("CA certificate", path, &pem)?;
                (Some(pem), certs)
            }
            None => (None, Vec::new()),
        };
        let client = match (&tls.client_cert, &tls.client_key) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read_file("client certificate", cert_path)?;
                let certs = pem_certs("client certificate", cert_path, &cert_pem)?;
                let key_pem = read_file("client key", key_path)?;
                let key =
                    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ConfigError::TlsFile {
                        what: "client key",
                        path: key_path.clone(),
                        reason: e.to_string(),
                    })?;
                Some(ClientIdentity {
                    cert_pem,
                    key_pem,
                    certs,
                    key: Arc::new(key),
                })
            }
            (None, None) => None,
            _ => return Err(ConfigError::IncompleteClientCert),
        };
        let material = TlsMaterial { ca_pem, ca, client };
        // Builds the rustls configuration once to reject a key that does
        // not match its certificate now rather than at the first export.
        material.rustls_config()?;
        Ok(material)
    }

    /// The configured CA only, or else the system's trust store.
    fn rustls_config(&self) -> Result<rustls::ClientConfig, ConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        if self.ca.is_empty() {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system store may hold certificates rustls rejects;
                // skipping them is what every client does.
                let _ = roots.add(cert);
            }
        } else {
            for cert in &self.ca {
                roots
                    .add(cert.clone())
                    .map_err(|e| ConfigError::Tls(format!("CA certificate: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        match &self.client {
            Some(id) => builder
                .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
                .map_err(|e| ConfigError::Tls(format!("client certificate and key: {e}"))),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

// ---------------------------------------------------------------- gRPC

pub(crate) struct GrpcTransport {
    endpoint: Endpoint,
    channel: Option<Channel>,
    metadata: MetadataMap,
    gzip: bool,
    timeout: Duration,
}

impl GrpcTransport {
    fn new(
        uri: Uri,
        tls: Option<TlsMaterial>,
        headers: HeaderMap,
        gzip: bool,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let tls_err = |e: tonic::transport::Error| ConfigError::Tls(error_chain(&e));
        let mut endpoint = Endpoint::from(uri)
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .user_agent(user_agent())
            .map_err(tls_err)?;
        if let Some(tls) = tls {
            let mut config = ClientTlsConfig::new();
            config = match &tls.ca_pem {
                Some(pem) => config.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                None => config.with_native_roots(),
            };
            if let Some(id) = &tls.client {
                config = config.identity(tonic::transport::Identity::from_pem(
                    &id.cert_pem,
                    &id.key_pem,
                ));
            }
            endpoint = endpoint.tls_config(config).map_err(tls_err)?;
        }
        Ok(GrpcTransport {
            endpoint,
            channel: None,
            metadata: MetadataMap::from_headers(headers),
            gzip,
            timeout,
        })
    }

    async fn send(&mut self, body: &Bytes) -> Result<Accepted, AttemptError> {
        let channel = match &self.channel {
            Some(c) => c.clone(),
            None => {
                let c = self.endpoint.connect_lazy();
                self.channel = Some(c.clone());
                c
            }
        };
        let mut grpc = tonic::client::Grpc::new(channel);
        if self.gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready().await.map_err(|e| AttemptError::Retryable {
            cause: format!("cannot connect: {}", error_chain(&e)),
            retry_after: None,
            reconnect: true,
        })?;
        let mut request = tonic::Request::from_parts(
            self.metadata.clone(),
            tonic::Extensions::default(),
            body.clone(),
        );
        // Tells the server our deadline (grpc-timeout), so that it does not
        // work on a request we stopped waiting for.
        request.set_timeout(self.timeout);
        let path = http::uri::PathAndQuery::from_static(GRPC_EXPORT_PATH);
        match grpc.unary(request, path, RawCodec).await {
            Ok(response) => {
                let r = response.into_inner();
                let partial = r.partial_success.unwrap_or_default();
                Ok(Accepted {
                    rejected_profiles: partial.rejected_profiles,
                    error_message: partial.error_message,
                })
            }
            Err(status) => Err(classify_status(&status)),
        }
    }
}

/// A status that tonic made from a local error (connection refused, reset,
/// protocol error) is a transport failure, retried whatever code tonic
/// picked for it; a status that came from the server follows the OTLP
/// rules.
fn classify_status(status: &tonic::Status) -> AttemptError {
    use std::error::Error;
    if let Some(source) = status.source() {
        return AttemptError::Retryable {
            // The source chain repeats the message.
            cause: error_chain(source),
            retry_after: None,
            reconnect: true,
        };
    }
    retry::classify_grpc(status.code(), status.message(), status.details())
}

/// Sends the already-encoded request as is and decodes the response.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportProfilesServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportProfilesServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportProfilesServiceResponse>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportProfilesServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
    }
}

// ---------------------------------------------------------------- HTTP

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) struct HttpTransport {
    uri: Uri,
    tls: Arc<rustls::ClientConfig>,
    https: bool,
    client: Option<HttpsClient>,
    headers: HeaderMap,
    gzip: bool,
    timeout: Duration,
}

impl HttpTransport {
    fn new(
        uri: Uri,
        tls: Option<TlsMaterial>,
        mut headers: HeaderMap,
        gzip: bool,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let https = tls.is_some();
        let tls = Arc::new(match tls {
            Some(m) => m.rustls_config()?,
            None => unused_tls_config()?,
        });
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        if gzip {
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        if let Ok(ua) = HeaderValue::from_str(&user_agent()) {
            headers.insert(http::header::USER_AGENT, ua);
        }
        Ok(HttpTransport {
            uri,
            tls,
            https,
            client: None,
            headers,
            gzip,
            timeout,
        })
    }

    fn client(&mut self) -> HttpsClient {
        if let Some(c) = &self.client {
            return c.clone();
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.timeout));
        let builder =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*self.tls).clone());
        let connector = if self.https {
            builder.https_only().enable_http1().wrap_connector(http)
        } else {
            builder.https_or_http().enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        self.client = Some(client.clone());
        client
    }

    async fn send(&mut self, body: &Bytes) -> Result<Accepted, AttemptError> {
        let payload = if self.gzip {
            gzip(body).map_err(|e| AttemptError::Permanent {
                cause: format!("gzip: {e}"),
            })?
        } else {
            body.clone()
        };
        let mut request = http::Request::post(self.uri.clone())
            .body(Full::new(payload))
            .map_err(|e| AttemptError::Permanent {
                cause: format!("request: {e}"),
            })?;
        *request.headers_mut() = self.headers.clone();
        let client = self.client();
        let response = client
            .request(request)
            .await
            .map_err(|e| AttemptError::Retryable {
                cause: error_chain(&e),
                retry_after: None,
                reconnect: true,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            // An answer we could not read in full: the status still counts.
            Err(_) => Bytes::new(),
        };
        if status.is_success() {
            // An empty or undecodable body on 2xx is a full success.
            let r = ExportProfilesServiceResponse::decode(body).unwrap_or_default();
            let partial = r.partial_success.unwrap_or_default();
            return Ok(Accepted {
                rejected_profiles: partial.rejected_profiles,
                error_message: partial.error_message,
            });
        }
        Err(retry::classify_http(
            status.as_u16(),
            retry_after.as_deref(),
            &body,
        ))
    }
}

/// Plain `http://` never negotiates TLS, but the connector type wants a
/// configuration: one that trusts nothing.
fn unused_tls_config() -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

fn gzip(data: &[u8]) -> std::io::Result<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(data)?;
    Ok(Bytes::from(enc.finish()?))
}
