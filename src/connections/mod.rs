//! Connections that cannot be held for free.
//!
//! tonic serves every connection it is handed for as long as the peer keeps it open, and
//! retries a failing `accept` at once. An attacker could so hold file descriptors with
//! connections that send nothing, half an HTTP/2 preface or a header block that never
//! ends, until new clients and the key reload failed with EMFILE while the accept loop
//! spun. Here:
//!
//! - [`incoming`] accepts at most `max_connections` at once (refusing more, with a
//!   metric and a log line) and backs off when `accept` itself fails;
//! - [`Guarded`], each accepted socket, ends a connection that has not completed its
//!   handshake and sent a first request within `handshake_timeout`, or that has had no
//!   request in flight for `idle_timeout`;
//! - [`ActivityLayer`] tells each connection when its requests start and end (a
//!   response body that streams, WatchChanges, is a request in flight until it ends).
//!
//! HTTP/2 keepalive pings, which drop peers that stopped answering, are set on the tonic
//! server with the intervals of [`ConnectionLimits`].

mod activity;
mod guarded;
mod incoming;

use std::time::Duration;

pub use activity::ActivityLayer;
pub use guarded::{ConnectionInfo, Guarded};
pub use incoming::{Incoming, incoming};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// From accept to the first request (TLS and HTTP/2 handshakes included).
    pub handshake_timeout: Duration,
    /// Longest a connection stays open with no request in flight.
    pub idle_timeout: Duration,
    /// How often an HTTP/2 PING checks that the peer is alive.
    pub keepalive_interval: Duration,
    /// How long the answer to that PING may take before the connection is dropped.
    pub keepalive_timeout: Duration,
}

impl ConnectionLimits {
    /// These limits with `max_connections` lowered, when need be, to three quarters of
    /// the process's file limit: the rest stays for the database pool, the key files
    /// and the metrics listener, which must not fail with EMFILE because clients took
    /// every descriptor.
    pub fn within_file_limit(self) -> Self {
        let Some(file_limit) = file_limit() else { return self };
        let allowed = usize::try_from(file_limit / 4 * 3).unwrap_or(usize::MAX).max(1);
        if allowed >= self.max_connections {
            return self;
        }
        tracing::warn!(
            file_limit,
            max_connections = allowed,
            configured = self.max_connections,
            "the file limit (ulimit -n) leaves room for fewer connections than configured; raise it to serve more"
        );
        Self { max_connections: allowed, ..self }
    }
}

#[cfg(unix)]
fn file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
fn file_limit() -> Option<u64> {
    None
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1_024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}
