//! The load generator's HTTP/2 connection: tonic's generated clients over h2 itself.
//!
//! tonic's `Channel` hands each call to a buffer task, then to hyper's dispatch task, and
//! hyper streams the request body from a task of its own: the HEADERS frame left in one
//! write and the DATA frame in a second, so grantd often woke twice per request, and the
//! load generator spent CPU time that the cores it shares with grantd and PostgreSQL were
//! meant to give them. Here a call encodes its message, queues HEADERS and DATA on the
//! stream at once, and the connection task sends both in one write, as pgbench sends a
//! transaction's messages.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::uri::{Authority, Scheme, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tonic::body::Body;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/2 connection, cloned by every client that shares it.
#[derive(Clone)]
pub struct H2Channel {
    send: h2::client::SendRequest<Bytes>,
    /// `addr`: the `:authority` of every request, as tonic's `Channel` sets its origin.
    authority: Authority,
}

impl H2Channel {
    /// Connects to `addr` (`host:port`) and drives the connection on the current runtime.
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let authority: Authority = addr.parse().with_context(|| format!("{addr} is not a host:port"))?;
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("timed out")?
            .context("TCP connect failed")?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::handshake(tcp).await.context("HTTP/2 handshake failed")?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                eprintln!("connection closed: {err}");
            }
        });
        Ok(Self { send, authority })
    }
}

impl tower::Service<http::Request<Body>> for H2Channel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.send.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (send, authority) = (self.send.clone(), self.authority.clone());
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let mut uri = parts.uri.into_parts();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
            parts.uri = Uri::from_parts(uri)?;
            // A unary request's body is its one encoded message, ready at once.
            let message = body.collect().await?.to_bytes();
            let mut send = send.ready().await?;
            let (response, mut stream) = send.send_request(http::Request::from_parts(parts, ()), false)?;
            stream.send_data(message, true)?;
            let (parts, received) = response.await?.into_parts();
            Ok(http::Response::from_parts(parts, Body::new(Received { stream: received, trailers: false })))
        })
    }
}

/// A response body read from h2: its DATA frames, then its trailers (grpc-status).
struct Received {
    stream: h2::RecvStream,
    trailers: bool,
}

impl http_body::Body for Received {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.trailers {
            match self.stream.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // Read data is handed back to the window at once: nothing here is slow.
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => self.trailers = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.stream.poll_trailers(cx).map(|trailers| trailers.transpose().map(|t| t.map(Frame::trailers)))
    }
}
