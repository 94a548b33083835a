//! Connection mode: one client connection, one backend slot and connection
//! for its lifetime, bytes relayed both ways.
//!
//! Kept for clients whose traffic probegate should not frame. The slot is
//! taken through the same queue as request mode; the relay ends when either
//! side closes or nothing moves in either direction for `timeouts.idle`, so
//! a silent client cannot pin a backend thread. The first message's header
//! (sniffed before any slot is taken) is what an overload or no-backend
//! exception answers.
//!
//! Bytes are relayed as they are, so the client must speak the backend's
//! dialect; a mismatch is answered with an exception rather than garbled.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{exception_for, write_client_bytes};
use crate::protocols::thrift::{sniff, Flavor, MessageHeader, Sniff};
use crate::upstream::metrics::{method_index, Outcome};
use crate::upstream::{AcquireError, Upstream};

/// Relays one client connection through one backend connection.
pub async fn serve(
    mut client: TcpStream,
    mut buf: BytesMut,
    flavor: Flavor,
    upstream: Arc<Upstream>,
    _shutdown: CancellationToken,
) {
    let idle = upstream.config.timeouts.idle.get();
    let max_frame = upstream.config.limits.max_frame_bytes;
    // The header names the method and seqid any exception must carry.
    let header = loop {
        match sniff(&buf, max_frame) {
            Sniff::Thrift { header, .. } => break header,
            Sniff::Invalid(e) => {
                tracing::debug!(error = %e, "not a Thrift message; closing");
                return;
            }
            Sniff::NeedMore => {
                buf.reserve(512);
                match tokio::time::timeout(idle, client.read_buf(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
            }
        }
    };
    let method = method_index(&header.name);
    let refuse = |outcome: Outcome| upstream.metrics.request.count(method, outcome);
    let slot = match upstream.acquire().await {
        Ok(slot) => slot,
        Err(e) => {
            refuse(match e {
                AcquireError::QueueTimeout { .. } => Outcome::Timeout,
                _ => Outcome::Shed,
            });
            answer(&mut client, flavor, &header, &e.to_string(), idle).await;
            return;
        }
    };
    let index = slot.backend();
    let backend = &upstream.backends[index];
    if backend.flavor != flavor {
        refuse(Outcome::Error);
        let text = format!(
            "connection mode relays bytes unchanged: the client speaks {flavor}, backend {} speaks {}",
            backend.label, backend.flavor
        );
        answer(&mut client, flavor, &header, &text, idle).await;
        return;
    }
    let mut server = match backend.pool.get().await {
        Ok(conn) => conn.into_stream(),
        Err(e) => {
            upstream.report_failure(index, &e.to_string());
            refuse(Outcome::Error);
            let text = format!("backend connection failed: {e}");
            answer(&mut client, flavor, &header, &text, idle).await;
            return;
        }
    };
    match tokio::time::timeout(idle, server.write_all(&buf)).await {
        Ok(Ok(())) => {}
        _ => {
            upstream.report_failure(index, "replaying the first bytes failed");
            refuse(Outcome::Error);
            let text = "backend connection failed: replaying the first bytes failed";
            answer(&mut client, flavor, &header, text, idle).await;
            return;
        }
    }
    let metrics = &upstream.metrics.request;
    metrics.to_backend.inc_by(buf.len() as u64);
    drop(buf);
    relay(
        client,
        server,
        idle,
        metrics.to_backend.clone(),
        metrics.to_client.clone(),
        Some((Arc::clone(&upstream), index)),
    )
    .await;
    drop(slot);
}

async fn answer(
    client: &mut TcpStream,
    flavor: Flavor,
    header: &MessageHeader,
    text: &str,
    idle: Duration,
) {
    if header.is_oneway() {
        return;
    }
    write_client_bytes(client, &exception_for(flavor, header, text), idle).await;
}

/// Copies bytes both ways until both directions end, or nothing moved in
/// either direction for `idle`. Bytes from the backend are noted on
/// `backend` as signs of life, so that a health check finding every slot
/// held by relays counts a backend that is answering as busy, not down.
pub async fn relay(
    client: TcpStream,
    server: TcpStream,
    idle: Duration,
    to_backend: IntCounter,
    to_client: IntCounter,
    backend: Option<(Arc<Upstream>, usize)>,
) {
    let start = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Tracked {
        inner: client,
        start,
        activity: Arc::clone(&activity),
        counter: to_backend,
        backend: None,
    };
    let mut server = Tracked {
        inner: server,
        start,
        activity: Arc::clone(&activity),
        counter: to_client,
        backend,
    };
    let watchdog = async {
        loop {
            let last = start + Duration::from_millis(activity.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut server) => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "relay ended with an error");
            }
        }
        _ = watchdog => {
            tracing::debug!("no traffic either way for timeouts.idle; closing both sides");
        }
    }
}

/// A stream that counts the bytes read from it and notes when it last
/// moved any.
struct Tracked {
    inner: TcpStream,
    start: Instant,
    activity: Arc<AtomicU64>,
    counter: IntCounter,
    /// The backend this stream reads from, if it is one.
    backend: Option<(Arc<Upstream>, usize)>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counter.inc_by(n as u64);
            let now = self.start.elapsed().as_millis() as u64;
            self.activity.store(now, Ordering::Relaxed);
            if let Some((upstream, index)) = &self.backend {
                upstream.backends[*index].note_reply();
            }
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
