//! Per-request context: who is calling and under which request id, and the one place
//! where a handler's result becomes a response (metadata, logging, status mapping).

use std::{future::Future, time::Instant};

use tonic::{Code, Request, Response, Status, metadata::MetadataValue};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{Actor, Error, UserId},
    metrics,
};

pub const REQUEST_ID: &str = "x-request-id";

/// The request id the caller sent when it is a valid id (printable ASCII, at most 128
/// bytes), otherwise a fresh one.
pub fn request_id(sent: Option<&str>) -> String {
    sent.filter(|value| UserId::parse(value).is_ok()).map_or_else(|| Uuid::new_v4().to_string(), str::to_owned)
}

/// The caller of one RPC.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub actor: Actor,
    rpc: &'static str,
    started: Instant,
}

impl RequestContext {
    /// Takes the caller the authenticator attached, and the request id of
    /// `x-request-id` (see [`request_id`]).
    pub fn open<T>(rpc: &'static str, request: Request<T>) -> Result<(Self, T), Status> {
        let Caller { subject, admin, organizations, valid_until } = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("the request carries no authenticated caller"))?;
        let request_id = request_id(request.metadata().get(REQUEST_ID).and_then(|value| value.to_str().ok()));
        let actor = Actor { subject, request_id, admin, organizations, valid_until };
        Ok((Self { actor, rpc, started: Instant::now() }, request.into_inner()))
    }

    /// Runs the handler body inside a span naming the RPC and request id, logs the
    /// outcome, and answers with the request id in the response metadata.
    pub async fn reply<R>(self, body: impl Future<Output = Result<R, Error>>) -> Result<Response<R>, Status> {
        let span = tracing::info_span!("rpc", rpc = self.rpc, request_id = %self.actor.request_id, caller = %self.actor.subject);
        let result = body.instrument(span.clone()).await;
        let _entered = span.enter();
        let result = result.map(Response::new).map_err(|err| {
            // Each line names its request: log lines carry no span at info level (telemetry).
            let (rpc, request_id) = (self.rpc, &self.actor.request_id);
            match &err {
                Error::Internal(detail) => tracing::error!(rpc, %request_id, error = %detail, "internal error"),
                Error::Unavailable(detail) => tracing::warn!(rpc, %request_id, error = %detail, "database unavailable"),
                Error::Aborted { attempts } => tracing::warn!(rpc, %request_id, attempts, "transaction aborted"),
                other => tracing::info!(rpc, %request_id, caller = %self.actor.subject, error = %other, "rejected"),
            }
            Status::from(err)
        });
        if let Some(metrics) = metrics::global() {
            let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
            metrics.record(self.rpc, code, self.started.elapsed());
        }
        let request_id = MetadataValue::try_from(self.actor.request_id.as_str()).ok();
        match (result, request_id) {
            (Ok(mut response), Some(id)) => {
                response.metadata_mut().insert(REQUEST_ID, id);
                Ok(response)
            }
            (Err(mut status), Some(id)) => {
                status.metadata_mut().insert(REQUEST_ID, id);
                Err(status)
            }
            (result, None) => result,
        }
    }
}
