//! The gRPC source: weir serves the Toggle `ToggleEvents` service, so an agent can send its
//! `EventBatch`es to weir instead of Toggle. Each event is mapped to a CloudEvent and
//! submitted to the routes fed by `grpc`.
//!
//! Invalid events (no id or source, unknown category or level, no payload) are refused one
//! by one and listed in the answer's `errors`; the other events of the batch go on. A batch
//! larger than the configured limit is refused whole (`RESOURCE_EXHAUSTED`).

use super::mapping::{to_cloudevent, validate};
use super::pb::{self, toggle_events_server::ToggleEvents};
use crate::settings::GrpcConfig;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};
use weir_router::source::{RunningSource, SourceContext, SourceError, StartSource};
use weir_router::{Origin, Router, RouterError};

/// The `ToggleEvents` service backed by the router.
pub struct GrpcIngest {
    router: Arc<Router>,
    type_prefix: String,
    max_batch_events: usize,
}

impl GrpcIngest {
    /// The service for a running router.
    pub fn new(router: Arc<Router>, type_prefix: String, max_batch_events: usize) -> Self {
        Self {
            router,
            type_prefix,
            max_batch_events,
        }
    }

    async fn take(&self, batch: pb::EventBatch) -> Result<pb::SendEventsResponse, Status> {
        if batch.events.len() > self.max_batch_events {
            self.router
                .metrics()
                .rejected
                .with_label_values(&["grpc", "batch_too_large"])
                .inc();
            return Err(Status::resource_exhausted(format!(
                "batch of {} events exceeds the limit of {}",
                batch.events.len(),
                self.max_batch_events
            )));
        }
        let mut events = Vec::with_capacity(batch.events.len());
        let mut errors = Vec::new();
        for e in &batch.events {
            match validate(e).and_then(|()| to_cloudevent(e, &self.type_prefix)) {
                Ok(ce) => events.push(ce),
                Err(reason) => errors.push(format!("{}: {reason}", e.event_id)),
            }
        }
        if !errors.is_empty() {
            self.router
                .metrics()
                .rejected
                .with_label_values(&["grpc", "invalid_event"])
                .inc_by(errors.len() as u64);
        }
        let accepted = events.len() as u32;
        if !events.is_empty() {
            let origin = Origin {
                source_kind: "grpc",
                ..Origin::default()
            };
            self.router
                .submit_to(origin, events)
                .await
                .map_err(|e| match e {
                    RouterError::RateLimited { .. } => Status::resource_exhausted(e.to_string()),
                    other => Status::unavailable(other.to_string()),
                })?;
        }
        Ok(pb::SendEventsResponse {
            accepted,
            rejected: errors.len() as u32,
            errors,
        })
    }
}

#[tonic::async_trait]
impl ToggleEvents for GrpcIngest {
    async fn send_events(
        &self,
        request: Request<pb::EventBatch>,
    ) -> Result<Response<pb::SendEventsResponse>, Status> {
        self.take(request.into_inner()).await.map(Response::new)
    }

    async fn stream_events(
        &self,
        request: Request<Streaming<pb::EventBatch>>,
    ) -> Result<Response<pb::SendEventsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut total = pb::SendEventsResponse::default();
        while let Some(batch) = stream.message().await? {
            let answer = self.take(batch).await?;
            total.accepted += answer.accepted;
            total.rejected += answer.rejected;
            total.errors.extend(answer.errors);
        }
        Ok(Response::new(total))
    }
}

impl StartSource for GrpcConfig {
    async fn start(&self, name: &str, cx: SourceContext) -> Result<RunningSource, SourceError> {
        let Some(listen) = self.listen else {
            return Ok(RunningSource::default());
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| SourceError::new(name, format!("cannot listen on {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SourceError::new(name, format!("cannot listen on {listen}"), e))?;
        let service = pb::toggle_events_server::ToggleEventsServer::new(GrpcIngest::new(
            cx.router.clone(),
            self.type_prefix.clone(),
            self.max_batch_events,
        ))
        .max_decoding_message_size(cx.max_request_bytes);
        let done = cx.stopped();
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    done,
                )
                .await;
            if let Err(e) = served {
                tracing::error!("gRPC source stopped: {e}");
            }
        });
        Ok(RunningSource {
            tasks: vec![task],
            addr: Some(addr),
        })
    }
}
