//! The web console as the server offers it: its page over HTTP/1.1 with a strict
//! policy, and gRPC-web calls that are the caller's own gRPC calls (token and all).
//! The page's flows are played in a browser by console/tests (Playwright).

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{ADMIN, TestServer, create_org, proto as pb, token, wire::frame};
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

backend_tests!(
    the_page_is_served_over_http1_with_a_strict_policy,
    grpc_web_calls_are_the_callers_own_calls,
    without_the_console_the_port_speaks_http2_only,
);

/// Sends one HTTP/1.1 request and reads the answer until the server closes.
async fn http1(addr: SocketAddr, request: Vec<u8>) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&request).await.expect("send the request");
    let mut answer = Vec::new();
    // A server that does not speak HTTP/1.1 may reset the connection: what arrived is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    http1(addr, format!("GET {path} HTTP/1.1\r\nHost: grantd\r\nConnection: close\r\n\r\n").into_bytes()).await
}

/// A gRPC-web call as a browser makes it: HTTP/1.1, the message in a gRPC frame.
async fn grpc_web(addr: SocketAddr, path: &str, bearer: Option<&str>, message: &[u8]) -> String {
    let body = frame(message);
    let authorization = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: grantd\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
         {authorization}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    http1(addr, request).await
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

async fn the_page_is_served_over_http1_with_a_strict_policy(server: TestServer) {
    let page = get(server.addr, "/console/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert_eq!(header(&page, "content-type"), Some("text/html; charset=utf-8"));
    let policy = header(&page, "content-security-policy").expect("a content security policy");
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert_eq!(header(&page, "referrer-policy"), Some("no-referrer"));
    assert!(header(&page, "x-request-id").is_some(), "every response names its request");
    assert!(page.contains(r#"<script type="module" src="app.js"></script>"#), "{page}");

    let script = get(server.addr, "/console/app.js").await;
    assert!(script.starts_with("HTTP/1.1 200"), "{}", &script[..200.min(script.len())]);
    assert_eq!(header(&script, "content-type"), Some("text/javascript; charset=utf-8"));
    assert!(script.contains("Bearer "), "the bundle sends the operator's token");

    let bare = get(server.addr, "/console").await;
    assert!(bare.starts_with("HTTP/1.1 308"), "{bare}");
    assert_eq!(header(&bare, "location"), Some("/console/"));
}

async fn grpc_web_calls_are_the_callers_own_calls(server: TestServer) {
    create_org(&server, "acme").await;
    let path = "/grants.v1.DirectoryService/GetOrganization";
    let request = pb::GetOrganizationRequest { id: "acme".into() }.encode_to_vec();

    let answer = grpc_web(server.addr, path, Some(&token(ADMIN, true)), &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(header(&answer, "content-type"), Some("application/grpc-web+proto"));
    assert!(answer.contains("grpc-status:0"), "the status travels in the body's trailer frame: {answer}");
    assert!(answer.contains("acme"), "{answer}");

    let anonymous = grpc_web(server.addr, path, None, &request).await;
    assert_eq!(header(&anonymous, "grpc-status"), Some("16"), "no token, UNAUTHENTICATED: {anonymous}");

    // A caller without rights is denied here exactly as over gRPC.
    let removal = pb::RemoveUserFromOrganizationRequest {
        organization_id: "acme".into(),
        user_id: "auth0|alice".into(),
        allow_missing: true,
    }
    .encode_to_vec();
    let denied = grpc_web(
        server.addr,
        "/grants.v1.GrantService/RemoveUserFromOrganization",
        Some(&token("mallory", false)),
        &removal,
    )
    .await;
    assert_eq!(header(&denied, "grpc-status"), Some("7"), "PERMISSION_DENIED: {denied}");

    // Only pages grantd serves itself may call it from a browser: no CORS preflight passes.
    let preflight = http1(
        server.addr,
        format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: grantd\r\nOrigin: https://elsewhere.example\r\n\
             Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization,content-type\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes(),
    )
    .await;
    assert_eq!(header(&preflight, "access-control-allow-origin"), None, "{preflight}");
}

async fn without_the_console_the_port_speaks_http2_only(server: TestServer) {
    let plain = server.replica(|options| options.console = false).await;
    let page = get(plain.addr, "/console/").await;
    assert!(!page.starts_with("HTTP/1.1"), "no HTTP/1.1 answer: {page}");
    let organizations = plain
        .directory()
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .expect("gRPC over HTTP/2 still serves");
    assert!(organizations.into_inner().organizations.is_empty());
}
