//! Tells each connection when its requests start and end. A request ends when its
//! response body does: a WatchChanges stream keeps its connection busy for as long as it
//! streams, however long no message is sent.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use super::guarded::{Activity, ConnectionInfo};

#[derive(Debug, Clone, Default)]
pub struct ActivityLayer;

impl<S> Layer<S> for ActivityLayer {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
}

/// One request in flight on its connection, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.request_started();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl<S, B> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let in_flight = request.extensions().get::<ConnectionInfo>().map(|info| InFlight::start(info.activity.clone()));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match in_flight {
                Some(in_flight) => response.map(|body| Body::new(Streaming { body, _in_flight: in_flight })),
                None => response,
            })
        })
    }
}

/// A response body that holds its request in flight.
struct Streaming {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Streaming {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
