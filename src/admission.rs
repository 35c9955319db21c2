//! Load shedding: at most `max_in_flight` gRPC requests run at once; the others wait in
//! arrival order for at most `queue_timeout`, then answer RESOURCE_EXHAUSTED. Under
//! overload clients so get a fast, retryable refusal and the admitted requests keep a
//! bounded latency, instead of every request queueing for a database connection until
//! its deadline. Health and reflection are never shed: a probe must see an overloaded
//! replica as alive.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::metrics;

#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    queue_timeout: Duration,
}

impl AdmissionLayer {
    pub fn new(max_in_flight: usize, queue_timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Self { permits: Arc::new(Semaphore::new(max_in_flight)), max_in_flight, queue_timeout }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission { inner, layer: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

fn never_shed(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> Service<Request<B>> for Admission<S>
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is not ready yet; the service that was polled ready answers this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if never_shed(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        let AdmissionLayer { permits, max_in_flight, queue_timeout } = self.layer.clone();
        Box::pin(async move {
            let Ok(Ok(permit)) = tokio::time::timeout(queue_timeout, permits.acquire_owned()).await else {
                if let Some(metrics) = metrics::global() {
                    metrics.request_shed();
                }
                let status = Status::resource_exhausted(format!(
                    "grantd is overloaded: {max_in_flight} requests are running and this one waited {} ms for a \
                     turn; retry with backoff",
                    queue_timeout.as_millis()
                ));
                return Ok(status.into_http());
            };
            let response = inner.call(request).await;
            drop(permit);
            response
        })
    }
}
