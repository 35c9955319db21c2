//! Raw HTTP/2 for what tonic's client would never send: hand-made gRPC bodies (bytes
//! that are no protobuf of the method's type, truncated frames) with chosen metadata.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpStream;
use tonic::Status;

/// What the server answered: its status, and the request id of the response headers.
#[derive(Debug)]
pub struct Answer {
    pub status: Status,
    pub request_id: Option<String>,
}

/// One gRPC body frame around `message`: no compression, big-endian length.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).expect("a small message");
    let mut framed = vec![0];
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Opens a fresh HTTP/2 connection as `connection` says and sends a gRPC request's
/// headers for `path` with `metadata`; the body is the caller's to send.
async fn send_headers(
    addr: SocketAddr,
    path: &str,
    metadata: &[(&str, &str)],
    connection: h2::client::Builder,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = connection.handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("the connection takes a request");
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    for (name, value) in metadata {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    client.send_request(request, false).expect("send the headers")
}

/// POSTs `body` to `path` over a fresh HTTP/2 connection with gRPC's headers and
/// `metadata`, and reads the answer to its end.
pub async fn call(addr: SocketAddr, path: &str, metadata: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let (response, mut stream) = send_headers(addr, path, metadata, h2::client::Builder::new()).await;
    // A refusal before any handler (no token, oversize headers) may answer and close the
    // stream before the body is sent; the answer is what the test reads.
    let _ = stream.send_data(Bytes::from(body), true);
    let (parts, mut body) = response.await.expect("a response").into_parts();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response data");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let status = Status::from_header_map(&parts.headers)
        .or_else(|| Status::from_header_map(&trailers))
        .unwrap_or_else(|| panic!("no grpc-status in {parts:?} or {trailers:?}"));
    let request_id = parts.headers.get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
    Answer { status, request_id }
}

/// A server stream read by hand, over a connection whose flow-control window is
/// `window` bytes: the server can send no more until the test reads.
pub struct RawStream {
    body: h2::RecvStream,
    headers: http::HeaderMap,
}

/// Opens a server-streaming call like [`call`], on a connection with a `window`-byte
/// flow-control window, and answers once the response headers arrived.
pub async fn open_stream(
    addr: SocketAddr,
    path: &str,
    metadata: &[(&str, &str)],
    message: &[u8],
    window: u32,
) -> RawStream {
    let mut connection = h2::client::Builder::new();
    connection.initial_window_size(window);
    let (response, mut stream) = send_headers(addr, path, metadata, connection).await;
    stream.send_data(Bytes::from(frame(message)), true).expect("send the request");
    let (parts, body) = response.await.expect("response headers").into_parts();
    RawStream { body, headers: parts.headers }
}

impl RawStream {
    /// Reads the stream to its end: every message, and the status it ended with.
    pub async fn read_to_end(mut self) -> (Vec<Vec<u8>>, Status) {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.body.data().await {
            let chunk = chunk.expect("response data");
            let _ = self.body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let trailers = self.body.trailers().await.expect("trailers").unwrap_or_default();
        let status = Status::from_header_map(&trailers)
            .or_else(|| Status::from_header_map(&self.headers))
            .unwrap_or_else(|| panic!("no grpc-status in {trailers:?}"));
        let mut messages = Vec::new();
        let mut rest = bytes.as_slice();
        while rest.len() >= 5 {
            let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            messages.push(rest[5..5 + length].to_vec());
            rest = &rest[5 + length..];
        }
        (messages, status)
    }
}
