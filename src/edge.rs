//! The outermost layer: what every response carries and how long a request may run.
//!
//! tonic answers some requests before any grantd handler sees them: a missing or bad
//! token (the interceptor), a message over the size limit, one it cannot decode, an
//! unknown method. Those answers pass through here too, so that every response carries
//! `x-request-id`, every refusal is logged under it, and the client's mistakes get the
//! codes and short messages of our contract instead of tonic's decoder text.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use crate::api::{REQUEST_ID, request_id};

/// The most request metadata (header names and values, bearer token included) a request
/// may carry. HTTP/2 is told to accept four times as much (see [`HEADER_LIST_LIMIT`]) so
/// that a request between the two is answered here, with a status a client can read.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// SETTINGS_MAX_HEADER_LIST_SIZE: beyond it HTTP/2 itself refuses the request (HTTP 431,
/// which clients report as UNKNOWN). Also what one connection may buffer for a header
/// block in flight, so it stays small.
pub const HEADER_LIST_LIMIT: u32 = 4 * MAX_METADATA_BYTES as u32;

/// What a client is told when its request could not be decoded; the decoder's own text
/// (offsets, wire types) is logged, not sent.
const UNDECODABLE: &str = "the request is not a valid protobuf message of the method's request type";

/// Client streams last as long as their client sends: the time limit bounds the wait for
/// each of their messages instead (BulkService). A server stream's answer starts at once
/// and is not held up by this layer at all.
const CLIENT_STREAMS: [&str; 1] = ["/grants.v1.BulkService/ImportGrants"];

#[derive(Debug, Clone)]
pub struct EdgeLayer {
    request_timeout: Duration,
}

impl EdgeLayer {
    pub fn new(request_timeout: Duration) -> Self {
        Self { request_timeout }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge { inner, request_timeout: self.request_timeout }
    }
}

#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    request_timeout: Duration,
}

impl<S, B> Service<Request<B>> for Edge<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is not ready yet; the service that was polled ready answers this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let id = request_id(request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()));
        let id_header = HeaderValue::from_str(&id).ok();
        // Handlers read the request id from the request, so that they log and record
        // the one this layer answers with.
        if let Some(value) = &id_header {
            request.headers_mut().insert(REQUEST_ID, value.clone());
        }
        let rpc = request.uri().path().to_owned();
        let limit = self.request_timeout;
        let metadata = metadata_bytes(request.headers());
        Box::pin(async move {
            let response = if metadata > MAX_METADATA_BYTES {
                Status::resource_exhausted(format!(
                    "the request metadata takes {metadata} bytes, more than the {MAX_METADATA_BYTES} this server \
                     accepts (authorization included)"
                ))
                .into_http()
            } else if CLIENT_STREAMS.contains(&rpc.as_str()) {
                inner.call(request).await?
            } else {
                match tokio::time::timeout(limit, inner.call(request)).await {
                    Ok(response) => response?,
                    Err(_) => Status::deadline_exceeded(format!(
                        "the request ran longer than this server allows ({} ms)",
                        limit.as_millis()
                    ))
                    .into_http(),
                }
            };
            Ok(finish(response, &rpc, &id, id_header))
        })
    }
}

/// A response from a grantd handler already names its request; any other was decided
/// before a handler ran, and gets the request id, a log line, and our code for it.
fn finish(mut response: Response<Body>, rpc: &str, request_id: &str, id_header: Option<HeaderValue>) -> Response<Body> {
    if response.headers().contains_key(REQUEST_ID) {
        return response;
    }
    if let Some(status) = Status::from_header_map(response.headers()).filter(|status| status.code() != Code::Ok) {
        let answer = client_mistake(&status);
        match &answer {
            Some(ours) => {
                tracing::info!(rpc, %request_id, code = ?ours.code(), detail = %status.message(), "rejected before a handler")
            }
            None => {
                tracing::info!(rpc, %request_id, code = ?status.code(), error = %status.message(), "rejected before a handler")
            }
        }
        if let Some(ours) = answer {
            response = ours.into_http();
        }
    }
    if let Some(value) = id_header {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// tonic's answers for a client's mistakes, in our contract's terms. A handler's own
/// INTERNAL always names its request, so an INTERNAL without one comes from tonic
/// decoding the request: its protobuf, its gRPC framing or its compression flag.
fn client_mistake(status: &Status) -> Option<Status> {
    match status.code() {
        Code::Internal => Some(Status::invalid_argument(UNDECODABLE)),
        Code::OutOfRange if status.message().contains("decoded message length too large") => {
            Some(Status::resource_exhausted(status.message()))
        }
        _ => None,
    }
}

fn metadata_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum()
}
