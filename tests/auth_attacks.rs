//! Attacks on authentication: every rejected token is UNAUTHENTICATED with a message that
//! says what was wrong (and never the key), nothing is written, and the server keeps
//! serving. Health and reflection stay open. Runs over SQLite and PostgreSQL; servers
//! with other key configurations (ES256 PEM, JWKS, issuer/audience) are started beside
//! the test server, on the same database.

mod common;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{
    Bearer, Snapshot, TEST_SECRET, TestServer, add_member, create_org, create_permission, proto as pb, snapshot,
};
use grantd::{
    api::pb::{directory_service_client::DirectoryServiceClient, grant_service_client::GrantServiceClient},
    auth::{Authenticator, Claims, KeyConfig, TokenRequest, Verifier},
    server::{self, ServerOptions},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rcgen::KeyPair;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

backend_tests!(
    no_token_is_unauthenticated,
    authorization_that_is_not_a_bearer_token_is_unauthenticated,
    garbage_bearer_token_is_unauthenticated,
    token_signed_with_another_secret_is_unauthenticated,
    expired_token_is_unauthenticated,
    token_accepted_before_is_refused_once_it_expires,
    token_not_yet_valid_is_unauthenticated,
    alg_none_token_is_unauthenticated,
    token_with_its_signature_stripped_is_unauthenticated,
    subject_that_is_not_a_user_id_is_unauthenticated,
    token_without_subject_is_unauthenticated,
    missing_subject_or_expiry_is_named_in_the_message,
    hmac_token_keyed_with_a_public_key_is_unauthenticated_on_an_hs256_server,
    es256_server_accepts_es256_and_refuses_hs_rs_confusion,
    jwks_server_chooses_keys_by_kid_and_forgets_removed_keys_on_reload,
    issuer_and_audience_are_enforced_when_configured,
    audience_may_be_an_array_as_rfc_7519_allows,
    health_and_reflection_need_no_token,
    an_unknown_key_id_is_not_echoed,
    large_tokens_get_a_clear_answer,
);

// ---------------------------------------------------------------------------------------
// Tests against the standard (HS256) test server
// ---------------------------------------------------------------------------------------

async fn no_token_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    assert_rejected(&server, &server.channel, Bearer::none(), "missing authorization").await;
    assert_nothing_written(&server, before).await;
}

async fn authorization_that_is_not_a_bearer_token_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    for value in ["Basic xyz", "Basic YWRtaW46YWRtaW4=", "Token abc", "Bearer", "BEARER abc"] {
        let statuses = attempt(&server.channel, RawAuthorization::new(value)).await;
        for status in statuses {
            assert_eq!(status.code(), Code::Unauthenticated, "{value:?}: {status:?}");
            assert!(
                status.message().contains("Bearer <token>"),
                "{value:?}: the message should say a bearer token is expected: {status:?}"
            );
        }
    }
    assert_nothing_written(&server, before).await;
}

async fn garbage_bearer_token_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    for garbage in ["garbage", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        assert_rejected(&server, &server.channel, Bearer::new(garbage), "malformed token").await;
    }
    assert_nothing_written(&server, before).await;
}

async fn token_signed_with_another_secret_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    let other_secret = b"someone-elses-secret-0123456789abcdef!!";
    let forged = hs256(other_secret, &claims("mallory", true));
    // The refusal says which key the server expected, never the key itself.
    assert_rejected(&server, &server.channel, Bearer::new(&forged), "holds: an HS256 secret").await;
    // Minted the way grantd mints, but with the wrong key: still refused.
    let request = admin_request("mallory");
    let minted = grantd::auth::mint(other_secret, &request).expect("mint");
    let statuses = assert_rejected(&server, &server.channel, Bearer::new(&minted), "signature").await;
    for status in statuses {
        assert!(!status.message().contains("someone-elses-secret"), "{status:?}");
    }
    assert_nothing_written(&server, before).await;
}

async fn expired_token_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    let now = now();
    // Beyond the 30 s leeway.
    let expired = Claims { exp: now - 120, nbf: Some(now - 7200), iat: Some(now - 7200), ..claims("mallory", true) };
    assert_rejected(&server, &server.channel, Bearer::new(&hs256(TEST_SECRET, &expired)), "expired").await;
    let long_expired = Claims { exp: 1, nbf: None, iat: None, ..claims("mallory", true) };
    assert_rejected(&server, &server.channel, Bearer::new(&hs256(TEST_SECRET, &long_expired)), "expired").await;
    assert_nothing_written(&server, before).await;
}

/// The server remembers tokens that verified; that must not outlive their `exp`.
async fn token_accepted_before_is_refused_once_it_expires(server: TestServer) {
    let before = prepare(&server).await;
    // Expired, but within the 30 s leeway for a few more seconds.
    let expiring = Claims { exp: now() - 25, nbf: None, iat: None, ..claims("reader", false) };
    let token = hs256(TEST_SECRET, &expiring);
    assert_accepted(&server.channel, Bearer::new(&token)).await;
    let beyond_leeway = expiring.exp + 32;
    tokio::time::sleep(Duration::from_secs(beyond_leeway.saturating_sub(now()))).await;
    assert_rejected(&server, &server.channel, Bearer::new(&token), "expired").await;
    assert_nothing_written(&server, before).await;
}

async fn token_not_yet_valid_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    let now = now();
    let early = Claims { exp: now + 7200, nbf: Some(now + 3600), iat: Some(now), ..claims("mallory", true) };
    assert_rejected(&server, &server.channel, Bearer::new(&hs256(TEST_SECRET, &early)), "not valid yet").await;
    assert_nothing_written(&server, before).await;
}

async fn alg_none_token_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    let body = serde_json::to_vec(&claims("mallory", true)).expect("claims");
    for header in [r#"{"alg":"none"}"#, r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None","typ":"JWT"}"#] {
        let token = format!("{}.{}.", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(&body));
        let statuses = attempt(&server.channel, Bearer::new(&token)).await;
        for status in statuses {
            assert_eq!(status.code(), Code::Unauthenticated, "{header}: {status:?}");
            assert!(!status.message().is_empty(), "{header}: the message says what was wrong");
        }
    }
    assert_nothing_written(&server, before).await;
}

async fn token_with_its_signature_stripped_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    let genuine = common::token("alice", false);
    let (unsigned, _signature) = genuine.rsplit_once('.').expect("three parts");
    assert_rejected(&server, &server.channel, Bearer::new(&format!("{unsigned}.")), "").await;
    // A genuine non-admin token whose payload is swapped for an admin one keeps alice's
    // signature, which no longer verifies.
    let (header, _payload) = unsigned.split_once('.').expect("header.payload");
    let escalated = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("alice", true)).expect("claims"));
    let signature = genuine.rsplit('.').next().expect("signature");
    let tampered = format!("{header}.{escalated}.{signature}");
    assert_rejected(&server, &server.channel, Bearer::new(&tampered), "signature").await;
    assert_nothing_written(&server, before).await;
}

async fn subject_that_is_not_a_user_id_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    for subject in ["alice smith", "", "tab\there", &"x".repeat(129)] {
        let token = hs256(TEST_SECRET, &claims(subject, true));
        let statuses = attempt(&server.channel, Bearer::new(&token)).await;
        for status in statuses {
            assert_eq!(status.code(), Code::Unauthenticated, "sub {subject:?}: {status:?}");
            assert!(status.message().contains("sub"), "sub {subject:?}: {status:?}");
        }
    }
    assert_nothing_written(&server, before).await;
}

async fn token_without_subject_is_unauthenticated(server: TestServer) {
    let before = prepare(&server).await;
    for body in [
        serde_json::json!({ "exp": now() + 3600, "scope": "grants:admin" }),
        serde_json::json!({ "sub": "mallory", "scope": "grants:admin" }),
        serde_json::json!({ "sub": ["mallory"], "exp": now() + 3600, "scope": "grants:admin" }),
        serde_json::json!({ "sub": "mallory", "exp": "tomorrow", "scope": "grants:admin" }),
    ] {
        assert_rejected(&server, &server.channel, Bearer::new(&hs256_json(TEST_SECRET, &body)), "").await;
    }
    assert_nothing_written(&server, before).await;
}

/// The verifier requires `sub` and `exp` and maps a missing required claim to "token
/// claims are invalid: missing <claim>"; the message should say which one is missing.
async fn missing_subject_or_expiry_is_named_in_the_message(server: TestServer) {
    let before = prepare(&server).await;
    let no_sub = serde_json::json!({ "exp": now() + 3600, "scope": "grants:admin" });
    assert_rejected(&server, &server.channel, Bearer::new(&hs256_json(TEST_SECRET, &no_sub)), "sub").await;
    let no_exp = serde_json::json!({ "sub": "mallory", "scope": "grants:admin" });
    assert_rejected(&server, &server.channel, Bearer::new(&hs256_json(TEST_SECRET, &no_exp)), "exp").await;
    assert_nothing_written(&server, before).await;
}

async fn hmac_token_keyed_with_a_public_key_is_unauthenticated_on_an_hs256_server(server: TestServer) {
    let before = prepare(&server).await;
    let key = KeyPair::generate().expect("key pair");
    let forged = hs256(key.public_key_pem().as_bytes(), &claims("mallory", true));
    assert_rejected(&server, &server.channel, Bearer::new(&forged), "signature").await;
    assert_nothing_written(&server, before).await;
}

/// The status message travels in a header: echoing the token's `kid` let an attacker
/// size the answer (a 10,000-byte kid made a 10 KB grpc-message).
async fn an_unknown_key_id_is_not_echoed(server: TestServer) {
    let before = prepare(&server).await;
    let kid = "k".repeat(10_000);
    let header = Header { kid: Some(kid.clone()), ..Header::new(Algorithm::HS256) };
    let token = encode(&header, &claims("mallory", true), &EncodingKey::from_secret(TEST_SECRET)).expect("encode");
    let statuses = assert_rejected(&server, &server.channel, Bearer::new(&token), "key id").await;
    for status in statuses {
        let start: String = status.message().chars().take(200).collect();
        assert!(status.message().len() < 200, "{} bytes: {start:?}", status.message().len());
        assert!(!status.message().contains("kkkkkkkk"), "the kid is echoed: {start:?}");
    }
    assert_nothing_written(&server, before).await;
}

/// Identity providers issue large tokens (many groups or roles). HTTP/2 refuses metadata
/// over its header-list limit with HTTP 431, which clients report as UNKNOWN; below that
/// limit every size gets an answer a client can act on.
async fn large_tokens_get_a_clear_answer(server: TestServer) {
    let before = prepare(&server).await;
    // A genuine token padded with a claim grantd ignores, about 12 KB long.
    let padded = serde_json::json!({
        "sub": "reader", "exp": now() + 3600, "groups": vec!["g".repeat(90); 100],
    });
    let large = hs256_json(TEST_SECRET, &padded);
    assert!((12_000..14_000).contains(&large.len()), "{} bytes", large.len());
    assert_accepted(&server.channel, Bearer::new(&large)).await;

    // A 12 KB forgery is an ordinary bad token.
    let forged = format!("{}.{}.{}", "e".repeat(4_000), "e".repeat(4_000), "e".repeat(4_000));
    assert_rejected(&server, &server.channel, Bearer::new(&forged), "token").await;

    // Beyond the metadata limit: RESOURCE_EXHAUSTED naming the limit, nothing else.
    let oversized = format!("{}.{}.{}", "e".repeat(8_000), "e".repeat(8_000), "e".repeat(8_000));
    let outcomes = attempt(&server.channel, Bearer::new(&oversized)).await;
    for status in outcomes {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("16384"), "the message names the limit: {:?}", status.message());
        assert!(status.metadata().get("x-request-id").is_some(), "{status:?}");
    }
    assert_nothing_written(&server, before).await;
}

// ---------------------------------------------------------------------------------------
// Servers with other key configurations, beside the test server on its database
// ---------------------------------------------------------------------------------------

async fn es256_server_accepts_es256_and_refuses_hs_rs_confusion(server: TestServer) {
    let before = prepare(&server).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = KeyPair::generate().expect("key pair");
    let public_pem = key.public_key_pem();
    let pem_file = dir.path().join("issuer.pub.pem");
    std::fs::write(&pem_file, &public_pem).expect("write public key");
    let keys = KeyConfig { public_key_files: vec![pem_file], ..KeyConfig::default() };
    let verifier = Arc::new(Verifier::new(keys, None, None).expect("verifier"));
    let extra = ExtraServer::start(&server, verifier).await;

    let genuine = es256(&key, None, &claims("reader", false));
    assert_accepted(&extra.channel, Bearer::new(&genuine)).await;

    // HS/RS confusion: the public key (as published, and with its line ends trimmed) used
    // as an HMAC secret.
    for secret in [public_pem.as_bytes(), public_pem.trim().as_bytes()] {
        let confused = hs256(secret, &claims("mallory", true));
        let statuses = assert_rejected(&server, &extra.channel, Bearer::new(&confused), "algorithm").await;
        for status in statuses {
            assert!(!status.message().contains("BEGIN PUBLIC KEY"), "{status:?}");
        }
    }
    // The test server's own HS256 tokens mean nothing here.
    assert_rejected(&server, &extra.channel, Bearer::new(&common::token("mallory", true)), "algorithm").await;
    // Signed by another EC key.
    let stranger = KeyPair::generate().expect("key pair");
    assert_rejected(
        &server,
        &extra.channel,
        Bearer::new(&es256(&stranger, None, &claims("mallory", true))),
        "signature",
    )
    .await;
    // Not-yet-valid and expired ES256 tokens from the right key.
    let now = now();
    let early = Claims { nbf: Some(now + 3600), exp: now + 7200, ..claims("mallory", true) };
    assert_rejected(&server, &extra.channel, Bearer::new(&es256(&key, None, &early)), "not valid yet").await;
    let expired = Claims { nbf: None, iat: None, exp: now - 300, ..claims("mallory", true) };
    assert_rejected(&server, &extra.channel, Bearer::new(&es256(&key, None, &expired)), "expired").await;

    assert_nothing_written(&server, before).await;
    assert_accepted(&extra.channel, Bearer::new(&genuine)).await;
}

async fn jwks_server_chooses_keys_by_kid_and_forgets_removed_keys_on_reload(server: TestServer) {
    let before = prepare(&server).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let first = KeyPair::generate().expect("key pair");
    let second = KeyPair::generate().expect("key pair");
    let jwks_file = dir.path().join("jwks.json");
    write_jwks(&jwks_file, &[("key-1", &first), ("key-2", &second)]);
    let keys = KeyConfig { jwks_file: Some(jwks_file.clone()), ..KeyConfig::default() };
    let verifier = Arc::new(Verifier::new(keys, None, None).expect("verifier"));
    let extra = ExtraServer::start(&server, verifier.clone()).await;

    let by_first = es256(&first, Some("key-1"), &claims("reader", false));
    let by_second = es256(&second, Some("key-2"), &claims("reader", false));
    assert_accepted(&extra.channel, Bearer::new(&by_first)).await;
    assert_accepted(&extra.channel, Bearer::new(&by_second)).await;

    // An unknown kid, signed by a key the server has never seen.
    let stranger = KeyPair::generate().expect("key pair");
    let unknown = es256(&stranger, Some("key-3"), &claims("mallory", true));
    assert_rejected(&server, &extra.channel, Bearer::new(&unknown), "key id").await;
    assert_rejected(
        &server,
        &extra.channel,
        Bearer::new(&unknown),
        r#"holds kid "key-1" (ES256), kid "key-2" (ES256)"#,
    )
    .await;
    // A known kid, but signed by another key.
    let impostor = es256(&stranger, Some("key-1"), &claims("mallory", true));
    assert_rejected(&server, &extra.channel, Bearer::new(&impostor), "signature").await;
    // A known kid with HS256, keyed with that kid's public key.
    let confused = encode(
        &Header { kid: Some("key-1".into()), ..Header::new(Algorithm::HS256) },
        &claims("mallory", true),
        &EncodingKey::from_secret(first.public_key_pem().as_bytes()),
    )
    .expect("encode");
    assert_rejected(&server, &extra.channel, Bearer::new(&confused), "algorithm").await;

    // Rotation: key-2 leaves the file; after a reload its tokens are refused.
    write_jwks(&jwks_file, &[("key-1", &first)]);
    verifier.reload().expect("reload");
    assert_rejected(&server, &extra.channel, Bearer::new(&by_second), "key id").await;
    assert_accepted(&extra.channel, Bearer::new(&by_first)).await;

    // A broken file does not replace the keys in use.
    std::fs::write(&jwks_file, "{ not json").expect("write");
    assert!(verifier.reload().is_err(), "a broken JWKS file is reported");
    assert_accepted(&extra.channel, Bearer::new(&by_first)).await;
    assert_rejected(&server, &extra.channel, Bearer::new(&by_second), "key id").await;

    assert_nothing_written(&server, before).await;
}

async fn issuer_and_audience_are_enforced_when_configured(server: TestServer) {
    let before = prepare(&server).await;
    const ISSUER: &str = "https://issuer.example";
    const AUDIENCE: &str = "grantd";
    let keys = KeyConfig { hs256_secret_file: Some(server.secret_file.clone()), ..KeyConfig::default() };
    let verifier = Arc::new(Verifier::new(keys, Some(ISSUER.into()), Some(AUDIENCE.into())).expect("verifier"));
    let extra = ExtraServer::start(&server, verifier).await;

    let mint = |issuer: Option<&str>, audience: Option<&str>| {
        common::mint(TokenRequest {
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            ..admin_request("mallory")
        })
    };
    let cases = [
        // Which missing claim is reported first is not specified.
        (None, None, "iss|aud"),
        (None, Some(AUDIENCE), "iss"),
        (Some(ISSUER), None, "aud"),
        (Some("https://evil.example"), Some(AUDIENCE), "issuer"),
        (Some("https://issuer.example/"), Some(AUDIENCE), "issuer"),
        (Some(ISSUER), Some("someone-else"), "audience"),
        (Some(AUDIENCE), Some(ISSUER), "issuer|audience"),
    ];
    for (issuer, audience, expected) in cases {
        let statuses = assert_rejected(&server, &extra.channel, Bearer::new(&mint(issuer, audience)), expected).await;
        for status in statuses {
            assert!(!status.message().contains("grantd-tests-only-secret"), "{status:?}");
        }
    }
    assert_nothing_written(&server, before).await;

    let good = common::mint(TokenRequest {
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..admin_request("issuer-admin")
    });
    assert_accepted(&extra.channel, Bearer::new(&good)).await;
    // An admin token with the right issuer and audience may write.
    DirectoryServiceClient::new(InterceptedService::new(extra.channel.clone(), Bearer::new(&good)))
        .create_organization(pb::CreateOrganizationRequest { id: "via-issuer".into(), display_name: String::new() })
        .await
        .expect("a correctly issued admin token is accepted");
    assert_eq!(server.latest_revision().await, before.revision + 1);
}

/// RFC 7519 section 4.1.3: `aud` is a string or an array of strings; identity providers
/// (Auth0, Keycloak) commonly send an array. A token whose array names the configured
/// audience is for us; one whose array does not is refused.
async fn audience_may_be_an_array_as_rfc_7519_allows(server: TestServer) {
    const ISSUER: &str = "https://issuer.example";
    const AUDIENCE: &str = "grantd";
    let keys = KeyConfig { hs256_secret_file: Some(server.secret_file.clone()), ..KeyConfig::default() };
    let verifier = Arc::new(Verifier::new(keys, Some(ISSUER.into()), Some(AUDIENCE.into())).expect("verifier"));
    let extra = ExtraServer::start(&server, verifier).await;
    let body = |audience: serde_json::Value| serde_json::json!({ "sub": "reader", "exp": now() + 3600, "iss": ISSUER, "aud": audience });

    let before = prepare(&server).await;
    let foreign = hs256_json(TEST_SECRET, &body(serde_json::json!(["someone-else", "another"])));
    assert_rejected(&server, &extra.channel, Bearer::new(&foreign), "").await;
    assert_nothing_written(&server, before).await;

    let ours = hs256_json(TEST_SECRET, &body(serde_json::json!(["https://api.example", AUDIENCE])));
    assert_accepted(&extra.channel, Bearer::new(&ours)).await;
}

async fn health_and_reflection_need_no_token(server: TestServer) {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let mut health = HealthClient::new(server.channel.clone());
    for service in ["", "grants.v1.GrantService", "grants.v1.DirectoryService", "grants.v1.AuditService"] {
        let response = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap_or_else(|status| panic!("health of {service:?} without a token: {status:?}"))
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    let response = responses.message().await.expect("reflection response").expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["grants.v1.GrantService", "grants.v1.DirectoryService", "grants.v1.AuditService"] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }

    // The grantd services themselves still want a token.
    let status = DirectoryServiceClient::new(server.channel.clone())
        .list_permissions(pb::ListPermissionsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Something for an attacker to write to: organization `acme`, `documents:read`, and
/// member `alice`. Answers the state before the attack.
async fn prepare(server: &TestServer) -> Snapshot {
    create_org(server, "acme").await;
    create_permission(server, "documents:read").await;
    add_member(server, "acme", "alice").await;
    snapshot(server).await
}

/// Nothing changed, and the server still serves an honest admin.
async fn assert_nothing_written(server: &TestServer, before: Snapshot) {
    assert_eq!(snapshot(server).await, before, "a rejected caller changed something");
    let permissions = server
        .directory()
        .list_permissions(pb::ListPermissionsRequest::default())
        .await
        .expect("the server still serves")
        .into_inner()
        .permissions;
    assert!(permissions.iter().any(|p| p.name == "documents:read"));
    server
        .grants()
        .check_permission(pb::CheckPermissionRequest {
            organization_id: "acme".into(),
            user_id: "alice".into(),
            permission: Some(pb::check_permission_request::Permission::PermissionName("documents:read".into())),
            ..Default::default()
        })
        .await
        .expect("the server still serves");
}

/// Calls a few RPCs, writes and reads, that an accepted admin token could make, and
/// answers every outcome that was an error (an accepted call panics).
async fn attempt<I>(channel: &Channel, auth: I) -> Vec<Status>
where
    I: Interceptor + Clone,
{
    let mut grants = GrantServiceClient::new(InterceptedService::new(channel.clone(), auth.clone()));
    let mut directory = DirectoryServiceClient::new(InterceptedService::new(channel.clone(), auth));
    let outcomes = vec![
        grants
            .add_user_permissions(pb::AddUserPermissionsRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                permission_names: vec!["documents:read".into()],
                ..Default::default()
            })
            .await
            .map(|_| "AddUserPermissions"),
        directory
            .add_user_to_organization(pb::AddUserToOrganizationRequest {
                organization_id: "acme".into(),
                user_id: "mallory".into(),
            })
            .await
            .map(|_| "AddUserToOrganization"),
        directory
            .create_organization(pb::CreateOrganizationRequest { id: "evil".into(), display_name: String::new() })
            .await
            .map(|_| "CreateOrganization"),
        directory
            .create_permission(pb::CreatePermissionRequest { name: "evil:perm".into(), description: String::new() })
            .await
            .map(|_| "CreatePermission"),
        grants
            .remove_user_from_organization(pb::RemoveUserFromOrganizationRequest {
                organization_id: "acme".into(),
                user_id: "alice".into(),
                allow_missing: true,
            })
            .await
            .map(|_| "RemoveUserFromOrganization"),
        directory.list_permissions(pb::ListPermissionsRequest::default()).await.map(|_| "ListPermissions"),
    ];
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(rpc) => panic!("{rpc} was accepted"),
            Err(status) => status,
        })
        .collect()
}

/// Every attempted call is UNAUTHENTICATED with `expected` (or one of its `|`-separated
/// alternatives) in the message, which names
/// neither the test secret nor any PEM; the server stays up.
async fn assert_rejected<I>(server: &TestServer, channel: &Channel, auth: I, expected: &str) -> Vec<Status>
where
    I: Interceptor + Clone,
{
    let statuses = attempt(channel, auth).await;
    let secret = std::str::from_utf8(TEST_SECRET).expect("ASCII secret");
    for status in &statuses {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let message = status.message().to_lowercase();
        assert!(
            expected.split('|').any(|word| message.contains(&word.to_lowercase())),
            "message {:?} should mention {expected:?}",
            status.message()
        );
        assert!(!status.message().contains(secret), "the message leaks the secret: {status:?}");
        assert!(!status.message().contains("PRIVATE KEY"), "{status:?}");
    }
    // Still serving.
    server.latest_revision().await;
    statuses
}

/// A read that any authenticated caller may make succeeds.
async fn assert_accepted(channel: &Channel, bearer: Bearer) {
    DirectoryServiceClient::new(InterceptedService::new(channel.clone(), bearer))
        .list_permissions(pb::ListPermissionsRequest::default())
        .await
        .expect("the token is accepted");
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// Claims valid for an hour.
fn claims(subject: &str, admin: bool) -> Claims {
    let now = now();
    Claims {
        sub: subject.to_owned(),
        exp: now + 3600,
        nbf: Some(now),
        iat: Some(now),
        scope: admin.then(|| grantd::auth::ADMIN_SCOPE.to_owned()),
        ..Claims::default()
    }
}

fn admin_request(subject: &str) -> TokenRequest {
    TokenRequest {
        subject: subject.to_owned(),
        admin: true,
        ttl: Duration::from_secs(3600),
        organizations: None,
        issuer: None,
        audience: None,
    }
}

fn hs256(secret: &[u8], claims: &Claims) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).expect("encode HS256")
}

fn hs256_json(secret: &[u8], body: &serde_json::Value) -> String {
    encode(&Header::new(Algorithm::HS256), body, &EncodingKey::from_secret(secret)).expect("encode HS256")
}

fn es256(key: &KeyPair, kid: Option<&str>, claims: &Claims) -> String {
    let header = Header { kid: kid.map(str::to_owned), ..Header::new(Algorithm::ES256) };
    let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("EC private key");
    encode(&header, claims, &encoding).expect("encode ES256")
}

/// A JWKS file holding the P-256 public keys under the given key ids.
fn write_jwks(path: &std::path::Path, keys: &[(&str, &KeyPair)]) {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(kid, key)| {
            let point = key.public_key_raw();
            assert_eq!(point.len(), 65, "an uncompressed P-256 point");
            serde_json::json!({
                "kty": "EC",
                "crv": "P-256",
                "alg": "ES256",
                "use": "sig",
                "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({ "keys": keys })).expect("JWKS");
    std::fs::write(path, text).expect("write JWKS");
}

/// Sends an arbitrary `authorization` value.
#[derive(Clone)]
struct RawAuthorization(MetadataValue<Ascii>);

impl RawAuthorization {
    fn new(value: &str) -> Self {
        Self(value.parse().expect("ASCII"))
    }
}

impl Interceptor for RawAuthorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A second grantd on the test server's database, verifying tokens with `verifier`.
struct ExtraServer {
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    _handle: JoinHandle<()>,
}

impl ExtraServer {
    async fn start(server: &TestServer, verifier: Arc<Verifier>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let options = ServerOptions::new(Authenticator::Tokens(verifier));
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let db = server.db.clone();
        let handle = tokio::spawn(async move {
            server::serve(db, listener, options, async {
                let _ = shutdown_rx.await;
            })
            .await
            .expect("extra server");
        });
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        Self { channel, shutdown: Some(shutdown), _handle: handle }
    }
}

impl Drop for ExtraServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
