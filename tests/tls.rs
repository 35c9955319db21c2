//! TLS and mutual TLS: a server with certificates made by a test CA (rcgen) answers TLS
//! clients that trust the CA; with a client CA configured it also wants a client
//! certificate that CA signed. Tokens are still required over TLS. SQLite only: the
//! database plays no part here.

mod common;

use std::{sync::Arc, time::Duration};

use common::{ADMIN, Bearer, TEST_SECRET, proto as pb};
use grantd::{
    api::pb::directory_service_client::DirectoryServiceClient,
    auth::{Authenticator, KeyConfig, Verifier},
    server::{self, ServerOptions, TlsOptions},
    storage::{self, PoolOptions},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Code,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

/// How long any one client attempt may take; a failed handshake must not hang.
const ATTEMPT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_answers_clients_that_trust_its_ca() {
    let ca = TestCa::new("grantd test CA");
    let (cert, key) = ca.server_cert();
    let server = TlsServer::start(TlsOptions { cert: cert.into_bytes(), key: key.into_bytes(), client_ca: None }).await;

    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    call(&server.https(), Some(tls.clone()), Some(&common::token(ADMIN, true)))
        .await
        .expect("a TLS client trusting the CA, with an admin token");
    // Health needs no token over TLS either.
    health(&server.https(), tls.clone()).await.expect("health over TLS");

    // Still no entry without a token.
    let status = call(&server.https(), Some(tls.clone()), None).await.expect_err("no token");
    assert_eq!(status.code(), Some(Code::Unauthenticated), "{status:?}");
    let status = call(&server.https(), Some(tls), Some(&common::token("bob", false))).await.expect_err("not admin");
    assert_eq!(status.code(), Some(Code::PermissionDenied), "{status:?}");

    // A plaintext client gets nowhere.
    let failure = call(&server.http(), None, Some(&common::token(ADMIN, true))).await.expect_err("plaintext");
    assert!(failure.is_transport_or_unavailable(), "{failure:?}");

    // A client that does not trust the CA, or expects another name, refuses the server.
    let stranger = TestCa::new("another CA");
    let untrusting =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(stranger.pem())).domain_name("localhost");
    let failure =
        call(&server.https(), Some(untrusting), Some(&common::token(ADMIN, true))).await.expect_err("untrusted");
    assert!(failure.is_transport_or_unavailable(), "{failure:?}");
    let misnamed = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("grantd.example");
    let failure = call(&server.https(), Some(misnamed), Some(&common::token(ADMIN, true))).await.expect_err("misnamed");
    assert!(failure.is_transport_or_unavailable(), "{failure:?}");

    // The server is still up for a good client.
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    call(&server.https(), Some(tls), Some(&common::token(ADMIN, true))).await.expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_wants_a_client_certificate_signed_by_the_client_ca() {
    let ca = TestCa::new("grantd test CA");
    let (cert, key) = ca.server_cert();
    let server = TlsServer::start(TlsOptions {
        cert: cert.into_bytes(),
        key: key.into_bytes(),
        client_ca: Some(ca.pem().into_bytes()),
    })
    .await;
    let trusting = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    let admin = common::token(ADMIN, true);

    // No client certificate.
    let failure = call(&server.https(), Some(trusting()), Some(&admin)).await.expect_err("no client certificate");
    assert!(failure.is_transport_or_unavailable(), "{failure:?}");

    // A certificate the client CA signed.
    let (client_cert, client_key) = ca.client_cert("client-1");
    let with_cert = trusting().identity(Identity::from_pem(&client_cert, &client_key));
    call(&server.https(), Some(with_cert.clone()), Some(&admin)).await.expect("a client certificate the CA signed");
    // ... which is no substitute for a token.
    let status = call(&server.https(), Some(with_cert), None).await.expect_err("no token");
    assert_eq!(status.code(), Some(Code::Unauthenticated), "{status:?}");

    // A certificate of another CA, even with the same subject.
    let other = TestCa::new("grantd test CA");
    let (foreign_cert, foreign_key) = other.client_cert("client-1");
    let foreign = trusting().identity(Identity::from_pem(&foreign_cert, &foreign_key));
    let failure = call(&server.https(), Some(foreign), Some(&admin)).await.expect_err("foreign client certificate");
    assert!(failure.is_transport_or_unavailable(), "{failure:?}");

    // A self-signed client certificate.
    let self_key = KeyPair::generate().expect("key");
    let self_signed =
        CertificateParams::new(vec!["client-1".to_owned()]).expect("params").self_signed(&self_key).expect("cert");
    let selfish = trusting().identity(Identity::from_pem(self_signed.pem(), self_key.serialize_pem()));
    let failure = call(&server.https(), Some(selfish), Some(&admin)).await.expect_err("self-signed client certificate");
    assert!(failure.is_transport_or_unavailable(), "{failure:?}");

    // Another certificate of the client CA: the server still serves.
    let (client_cert, client_key) = ca.client_cert("client-2");
    let good = trusting().identity(Identity::from_pem(&client_cert, &client_key));
    call(&server.https(), Some(good), Some(&admin)).await.expect("still serving");
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A certificate authority that signs server and client certificates.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate");
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `localhost` and 127.0.0.1, and its key, in PEM. Clients connect
    /// to 127.0.0.1 and verify the name `localhost`.
    fn server_cert(&self) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for `name`, and its key, in PEM.
    fn client_cert(&self, name: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// grantd over TLS on an ephemeral port, verifying tokens with the test secret.
struct TlsServer {
    addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    _handle: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(tls: TlsOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("grantd.db").display());
        let db = storage::connect(&url, &PoolOptions::default()).await.expect("connect");
        storage::migrate_up(&db).await.expect("migrate");
        let secret_file = dir.path().join("hs256.secret");
        std::fs::write(&secret_file, TEST_SECRET).expect("write secret");
        let keys = KeyConfig { hs256_secret_file: Some(secret_file), ..KeyConfig::default() };
        let verifier = Verifier::new(keys, None, None).expect("verifier");
        let options = ServerOptions { tls: Some(tls), ..ServerOptions::new(Authenticator::Tokens(Arc::new(verifier))) };

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server::serve(db, listener, options, async {
                let _ = shutdown_rx.await;
            })
            .await
            .expect("TLS server");
        });
        Self { addr, shutdown: Some(shutdown), _handle: handle, _dir: dir }
    }

    fn https(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Why a client attempt failed.
#[derive(Debug)]
enum Failure {
    /// The channel could not be set up or connected (the reason shows in panics).
    Transport(#[allow(dead_code)] String),
    /// The call was answered with (or failed as) this status.
    Status(tonic::Status),
    TimedOut,
}

impl Failure {
    fn code(&self) -> Option<Code> {
        match self {
            Failure::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    /// Refused below gRPC: no connection, or a call that never reached a handler (a
    /// connection the server closes after a failed handshake cancels the call).
    fn is_transport_or_unavailable(&self) -> bool {
        match self {
            Failure::Transport(_) | Failure::TimedOut => true,
            Failure::Status(status) => {
                matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled)
            }
        }
    }
}

async fn connect(uri: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, Failure> {
    let mut endpoint = Channel::from_shared(uri.to_owned())
        .map_err(|err| Failure::Transport(err.to_string()))?
        .connect_timeout(ATTEMPT)
        .timeout(ATTEMPT);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|err| Failure::Transport(format!("{err:?}")))?;
    }
    endpoint.connect().await.map_err(|err| Failure::Transport(format!("{err:?}")))
}

/// ListOrganizations (admin-only) over a fresh connection.
async fn call(uri: &str, tls: Option<ClientTlsConfig>, token: Option<&str>) -> Result<(), Failure> {
    let attempt = async {
        let channel = connect(uri, tls).await?;
        let bearer = token.map_or_else(Bearer::none, Bearer::new);
        DirectoryServiceClient::new(InterceptedService::new(channel, bearer))
            .list_organizations(pb::ListOrganizationsRequest::default())
            .await
            .map(drop)
            .map_err(Failure::Status)
    };
    tokio::time::timeout(ATTEMPT * 2, attempt).await.unwrap_or(Err(Failure::TimedOut))
}

async fn health(uri: &str, tls: ClientTlsConfig) -> Result<(), Failure> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let attempt = async {
        let channel = connect(uri, Some(tls)).await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(drop)
            .map_err(Failure::Status)
    };
    tokio::time::timeout(ATTEMPT * 2, attempt).await.unwrap_or(Err(Failure::TimedOut))
}
