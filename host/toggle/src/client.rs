//! The connection to Toggle: a tonic channel (TLS and mutual TLS when configured) with a
//! bearer token on every request. Shared by the Toggle sink and `weir replay --spill`.
//!
//! Batches travel already encoded: the sink encodes a batch once and, if the request
//! fails, writes the same bytes to its spill file; a replay sends a file's bytes as they
//! are. The generated client would decode and re-encode them, so `SendEvents` is called
//! through tonic's generic client with a pass-through codec (`raw`).

use super::pb;
use super::settings::{ClientTls, TokenSource};
use bytes::Bytes;
use std::path::Path;
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A Toggle client; clones share the connection.
#[derive(Clone)]
pub struct ToggleClient {
    grpc: tonic::client::Grpc<InterceptedService<Channel, Bearer>>,
}

impl ToggleClient {
    /// Calls `rodent.RodentService/SendEvents` with an encoded `EventBatch`, within
    /// `timeout`. `Ok` is Toggle's answer, which may be `success: false` (it received the
    /// batch but had problems with it); a gRPC error is a failed send.
    pub async fn send_encoded(
        &mut self,
        batch: Bytes,
        trace: Option<&weir_core::trace::W3c>,
        timeout: Duration,
    ) -> Result<pb::EventBatchResponse, tonic::Status> {
        let call = async {
            self.grpc
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("Toggle not reachable: {e}")))?;
            let mut request = tonic::Request::new(batch);
            request.set_timeout(timeout);
            // W3C Trace Context in the call's metadata: Toggle continues the trace.
            if let Some(w3c) = trace {
                let metadata = request.metadata_mut();
                if let Ok(value) = w3c.traceparent.parse() {
                    metadata.insert(weir_core::trace::TRACEPARENT, value);
                }
                if let Some(Ok(value)) = w3c.tracestate.as_deref().map(str::parse) {
                    metadata.insert(weir_core::trace::TRACESTATE, value);
                }
            }
            let path = PathAndQuery::from_static(SEND_EVENTS);
            self.grpc
                .unary(request, path, raw::RawCodec)
                .await
                .map(tonic::Response::into_inner)
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("Toggle did not answer in time"))?
    }
}

/// The gRPC path of `SendEvents`.
pub const SEND_EVENTS: &str = "/rodent.RodentService/SendEvents";

/// A codec that sends bytes that already are an encoded message and decodes the answer.
mod raw {
    use super::pb::EventBatchResponse;
    use bytes::{BufMut, Bytes};
    use prost::Message;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::Status;

    pub struct RawCodec;
    pub struct RawEncoder;
    pub struct AnswerDecoder;

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = EventBatchResponse;
        type Encoder = RawEncoder;
        type Decoder = AnswerDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> AnswerDecoder {
            AnswerDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Bytes;
        type Error = Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for AnswerDecoder {
        type Item = EventBatchResponse;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
            EventBatchResponse::decode(src)
                .map(Some)
                .map_err(|e| Status::internal(format!("Toggle's answer does not decode: {e}")))
        }
    }
}

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a valid endpoint.
    #[error("Toggle url `{url}`: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate, key or token file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The token is missing or not a valid header value.
    #[error("bearer token: {0}")]
    Token(String),
    /// The bearer token could not be read.
    #[error("token: {0}")]
    Secret(#[source] weir_core::auth::SecretError),
    /// TLS could not be configured.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Adds `authorization: Bearer <token>` to every request (when a token is configured).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.write_str(if self.0.is_some() {
            "Bearer(<set>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Reads the token from where it is configured.
pub fn read_token(source: &TokenSource) -> Result<String, ClientError> {
    source.read().map_err(ClientError::Secret)
}

/// What a client needs to reach Toggle.
#[derive(Debug, Clone, Default)]
pub struct Target<'a> {
    /// `http://host:port` or `https://host:port`.
    pub url: &'a str,
    /// TLS settings.
    pub tls: Option<&'a ClientTls>,
    /// The bearer token.
    pub token: Option<String>,
    /// Largest message sent or received.
    pub max_message_bytes: usize,
}

/// The endpoint for a target: timeouts, keep-alive and TLS (mutual when a client
/// certificate is configured).
fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    let url_err = |reason: String| ClientError::Url {
        url: url.to_owned(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| url_err(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if tls.is_some() || url.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        if let Some(t) = tls {
            config = config.ca_certificate(Certificate::from_pem(read(&t.ca)?));
            if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            if let Some(domain) = &t.domain {
                config = config.domain_name(domain.clone());
            }
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
    }
    Ok(endpoint)
}

/// A bare channel to Toggle, connecting on first use, with no credentials of its own: the
/// pass-through of `Register` and `Connect` forwards the agent's metadata as it came.
pub fn passthrough_channel(url: &str, tls: Option<&ClientTls>) -> Result<Channel, ClientError> {
    Ok(endpoint(url, tls)?.connect_lazy())
}

/// A client that connects on first use and reconnects after failures by itself, so the
/// router starts while Toggle is down.
pub fn connect_lazy(target: &Target<'_>) -> Result<ToggleClient, ClientError> {
    let endpoint = endpoint(target.url, target.tls)?;
    let bearer = match &target.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| ClientError::Token("not a valid header value".into()))?,
        ),
        None => None,
    };
    let channel = endpoint.connect_lazy();
    let grpc = tonic::client::Grpc::new(InterceptedService::new(channel, Bearer(bearer)))
        .max_encoding_message_size(target.max_message_bytes)
        .max_decoding_message_size(target.max_message_bytes.max(4 << 20));
    Ok(ToggleClient { grpc })
}
