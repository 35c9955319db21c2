//! The client commands of the `grantd` binary that talk to a running server: `health`,
//! `export` and `import`.

pub mod auth0;
pub mod export;
pub mod import;
pub mod jsonl;
mod progress;

use std::{fs, time::Duration};

use anyhow::Context;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::{api::pb::bulk_service_client::BulkServiceClient, config::ConnectArgs};

/// A channel to the server `args` names; `timeout` bounds connecting and each call.
pub async fn connect(args: &ConnectArgs, timeout: Option<Duration>) -> anyhow::Result<Channel> {
    let scheme = if args.tls_ca.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", args.addr))?;
    if let Some(timeout) = timeout {
        endpoint = endpoint.connect_timeout(timeout).timeout(timeout);
    }
    if let Some(ca) = &args.tls_ca {
        let ca = fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(domain) = &args.tls_domain {
            tls = tls.domain_name(domain);
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint.connect().await.with_context(|| format!("cannot connect to {}", args.addr))
}

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A BulkService client carrying `token`, for messages as large as a batch makes them.
async fn bulk_client(
    args: &ConnectArgs,
    token: &str,
) -> anyhow::Result<BulkServiceClient<InterceptedService<Channel, Bearer>>> {
    let bearer = format!("Bearer {}", token.trim()).parse().context("the token is not a printable ASCII string")?;
    let channel = connect(args, None).await?;
    Ok(BulkServiceClient::with_interceptor(channel, Bearer(bearer))
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024))
}
