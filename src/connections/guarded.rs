//! An accepted socket that closes itself when its connection is owed nothing.
//!
//! The socket is the one place that sees a connection from accept to close, before TLS
//! and HTTP/2 know anything of it, and the one place where closing needs no help from
//! tonic: a read that answers end-of-file ends the connection. Every read and write
//! first looks at the connection's [`Activity`]; a timer wakes the connection's task
//! when the deadline passes, so a peer that sends nothing is closed too.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::incoming::Permit;

/// What a connection's requests tell its socket.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request ended, in milliseconds after `opened`; [`NEVER`] until one
    /// has.
    idle_since_ms: AtomicU64,
}

const NEVER: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self { opened: Instant::now(), in_flight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(NEVER) }
    }

    pub(super) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn request_ended(&self) {
        let elapsed = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NEVER - 1);
        self.idle_since_ms.store(elapsed, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// When the connection closes unless a request starts first; `None` while one runs.
    fn closes_at(&self, handshake_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.idle_since_ms.load(Ordering::Acquire) {
            NEVER => Some(self.opened + handshake_timeout),
            idle_since => Some(self.opened + Duration::from_millis(idle_since) + idle_timeout),
        }
    }
}

/// What tonic puts in each request's extensions for this connection (see
/// [`Connected`]): its addresses, and its [`Activity`] for the [`super::ActivityLayer`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    pub(super) activity: Arc<Activity>,
}

pub struct Guarded {
    stream: TcpStream,
    activity: Arc<Activity>,
    deadline: Pin<Box<Sleep>>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    _permit: Permit,
}

impl Guarded {
    pub(super) fn new(stream: TcpStream, permit: Permit, handshake_timeout: Duration, idle_timeout: Duration) -> Self {
        let activity = Arc::new(Activity::new());
        let deadline = Box::pin(tokio::time::sleep_until(activity.opened + handshake_timeout));
        Self { stream, activity, deadline, handshake_timeout, idle_timeout, _permit: permit }
    }

    /// Whether the connection is over; otherwise the timer is armed for when it may be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadline.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.activity.closes_at(self.handshake_timeout, self.idle_timeout) {
                Some(at) if at <= now => return true,
                Some(at) => self.deadline.as_mut().reset(at),
                // Busy: look again after a whole idle period; the end of its last request
                // only pushes the deadline later than that.
                None => self.deadline.as_mut().reset(now + self.idle_timeout),
            }
        }
        false
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            // End of file: TLS and HTTP/2 close the connection as if the peer had.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // A peer that reads nothing can block the writes of a connection, which then
        // reads no more either.
        if self.expired(cx) {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Guarded {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo { tcp: self.stream.connect_info(), activity: self.activity.clone() }
    }
}
