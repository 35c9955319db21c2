//! The accept loop: at most `max_connections` connections at once, and a listener that
//! backs off when `accept` fails instead of retrying at once.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use tokio_stream::Stream;

use super::{ConnectionLimits, Guarded};
use crate::metrics;

/// The first pause after a failed accept; it doubles up to [`MAX_BACKOFF`] while accept
/// keeps failing (as Go's net/http does).
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Least time between two log lines about refused connections or failed accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A connection's place among the `max_connections`, given back when it closes.
pub struct Permit {
    _place: OwnedSemaphorePermit,
}

impl Permit {
    fn new(place: OwnedSemaphorePermit) -> Self {
        metrics::global().inspect(|m| m.connection_opened());
        Self { _place: place }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        metrics::global().inspect(|m| m.connection_closed());
    }
}

/// The connections `listener` accepts, each [`Guarded`]; for tonic's
/// `serve_with_incoming_shutdown`, which stops asking (and closes the listener) on
/// shutdown.
pub fn incoming(listener: TcpListener, limits: ConnectionLimits) -> Incoming {
    let acceptor = Acceptor {
        listener,
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        limits,
        backoff: None,
        refused: 0,
        logged_at: None,
    };
    Incoming { next: Box::pin(acceptor.next()) }
}

/// The stream of accepted connections: one accept in progress at a time.
pub struct Incoming {
    next: Pin<Box<dyn Future<Output = (Acceptor, Guarded)> + Send>>,
}

impl Stream for Incoming {
    type Item = Result<Guarded, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (acceptor, connection) = ready!(self.next.as_mut().poll(cx));
        self.next = Box::pin(acceptor.next());
        Poll::Ready(Some(Ok(connection)))
    }
}

struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    /// The pause after the next failed accept; `None` after a success.
    backoff: Option<Duration>,
    /// Connections refused since the last log line about them.
    refused: u64,
    logged_at: Option<Instant>,
}

impl Acceptor {
    /// The next connection with room for it; the acceptor comes back with it for the one
    /// after.
    async fn next(mut self) -> (Self, Guarded) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    self.backoff = None;
                    if let Some(connection) = self.admit(stream) {
                        return (self, connection);
                    }
                }
                // The peer gave up between its SYN and our accept: nothing is wrong here.
                Err(err) if matches!(err.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {
                }
                Err(err) => self.back_off(&err).await,
            }
        }
    }

    /// The connection, guarded, while there is room for it; otherwise it is closed at
    /// once, so the client learns now (and can try another replica) rather than when
    /// its connect times out.
    fn admit(&mut self, stream: TcpStream) -> Option<Guarded> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            drop(stream);
            metrics::global().inspect(|m| m.connection_refused());
            self.refused += 1;
            if self.may_log() {
                tracing::warn!(
                    max_connections = self.limits.max_connections,
                    refused = self.refused,
                    "connection limit reached; refusing new connections until some close"
                );
                self.refused = 0;
            }
            return None;
        };
        // Without TCP_NODELAY a response's frames wait on the client's delayed ACK.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        Some(Guarded::new(stream, Permit::new(permit), self.limits.handshake_timeout, self.limits.idle_timeout))
    }

    /// Out of file descriptors (or memory): the connection waits in the listen backlog
    /// while open ones close, instead of the loop retrying it at full speed.
    async fn back_off(&mut self, err: &io::Error) {
        let pause = self.backoff.map_or(MIN_BACKOFF, |pause| (pause * 2).min(MAX_BACKOFF));
        self.backoff = Some(pause);
        metrics::global().inspect(|m| m.accept_failed());
        if self.may_log() {
            tracing::warn!(error = %err, pause_ms = pause.as_millis(), "cannot accept connections; backing off");
        }
        tokio::time::sleep(pause).await;
    }

    fn may_log(&mut self) -> bool {
        let now = Instant::now();
        let due = self.logged_at.is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if due {
            self.logged_at = Some(now);
        }
        due
    }
}
