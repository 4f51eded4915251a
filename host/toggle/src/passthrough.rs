//! A transparent gRPC pass-through for the `rodent.RodentService` methods weir does not
//! serve itself (`Register`, `Connect`): the HTTP/2 request — path, metadata (the agent's
//! JWT included), and its body stream — goes to the upstream Toggle as it came, and
//! Toggle's response streams back as it comes, trailers included. Nothing is decoded, so
//! a bidirectional `Connect` stream stays one stream end to end, and fields or methods a
//! newer contract adds pass unchanged.

use crate::client::{passthrough_channel, ClientError};
use crate::settings::Upstream;
use std::convert::Infallible;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::Channel;
use tonic::Status;

/// Where calls are passed through to (`None`: they answer `UNIMPLEMENTED`).
#[derive(Clone)]
pub struct Passthrough {
    upstream: Option<Channel>,
}

impl Passthrough {
    /// A pass-through to `upstream` (connecting on first use).
    pub fn new(upstream: Option<&Upstream>) -> Result<Self, ClientError> {
        let upstream = upstream
            .map(|u| passthrough_channel(&u.url, u.tls.as_ref()))
            .transpose()?;
        Ok(Self { upstream })
    }

    /// Forwards one call; a transport failure answers `UNAVAILABLE`.
    pub fn forward(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<http::Response<Body>, Infallible> {
        let path = request.uri().path().to_owned();
        let Some(mut upstream) = self.upstream.clone() else {
            return Box::pin(async move {
                Ok(Status::unimplemented(format!(
                    "{path} is not served here: weir serves SendEvents, and passes other \
                     calls through only when the gRPC source has an `upstream`"
                ))
                .into_http())
            });
        };
        Box::pin(async move {
            let answer = async {
                std::future::poll_fn(|cx| upstream.poll_ready(cx)).await?;
                upstream.call(request).await
            };
            match answer.await {
                Ok(response) => Ok(response),
                Err(e) => {
                    tracing::warn!(
                        path,
                        "upstream Toggle unreachable: {}",
                        weir_core::util::error_chain(&e)
                    );
                    Ok(
                        Status::unavailable(format!("upstream Toggle unreachable: {e}"))
                            .into_http(),
                    )
                }
            }
        })
    }
}
