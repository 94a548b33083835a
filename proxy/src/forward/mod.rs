//! Forwarding recognised Thrift client connections to the backends.
//!
//! In request mode (the default, `request.rs`) each whole call is dispatched
//! on its own to a pooled backend connection, so an idle or trickling client
//! holds no backend thread. In connection mode (`connection.rs`) a client
//! connection takes one slot and one backend connection for its lifetime and
//! bytes are relayed both ways, for clients whose messages probegate should
//! not frame. Either way, when no slot can be had the client gets a Thrift
//! `TApplicationException` in its own dialect with its method name and seqid,
//! never a hang.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::ForwardingMode;
use crate::protocols::thrift::{
    encode_exception, transcode, Flavor, InvalidThrift, MessageHeader, Transport,
};
use crate::upstream::{Outgoing, Upstream};

mod budget;
mod buffers;
mod connection;
mod dispatch;
mod piping;
mod request;

/// Serve one client connection already recognised as Thrift. `buffered`
/// holds the bytes read so far (the start of the first message). Returns
/// when the client is done, idle longer than `timeouts.idle`, or `shutdown`
/// fires (an in-flight call is finished first).
pub async fn serve_thrift(
    client: TcpStream,
    buffered: BytesMut,
    flavor: Flavor,
    upstream: Arc<Upstream>,
    shutdown: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    match upstream.config.forwarding.mode {
        ForwardingMode::Request => {
            request::serve(client, buffered, flavor, upstream, shutdown).await
        }
        ForwardingMode::Connection => {
            connection::serve(client, buffered, flavor, upstream, shutdown).await
        }
    }
}

/// Re-expresses one whole message (`from` dialect) in the `to` dialect. A
/// transport difference is only the frame prefix (no copy of the body); a
/// protocol difference re-encodes the message.
pub fn convert(
    message: &Bytes,
    from: Flavor,
    to: Flavor,
    max_frame_bytes: usize,
) -> Result<Outgoing, InvalidThrift> {
    if from == to {
        return Ok(Outgoing::new(message.clone()));
    }
    if from.protocol == to.protocol {
        match (from.transport, to.transport) {
            (Transport::Framed, Transport::Buffered) if message.len() >= 4 => {
                return Ok(Outgoing::new(message.slice(4..)));
            }
            (Transport::Buffered, Transport::Framed) => {
                let len = u32::try_from(message.len())
                    .ok()
                    .filter(|len| (*len as usize) <= max_frame_bytes)
                    .ok_or(InvalidThrift::FrameTooLarge {
                        len: message.len() as u64,
                        max: max_frame_bytes,
                    })?;
                return Ok(Outgoing {
                    prefix: Some(len.to_be_bytes()),
                    body: message.clone(),
                    piped: None,
                });
            }
            _ => {}
        }
    }
    transcode(message, from, to, max_frame_bytes).map(|v| Outgoing::new(Bytes::from(v)))
}

/// The exception answer for a call that could not be served.
pub fn exception_for(flavor: Flavor, header: &MessageHeader, message: &str) -> Vec<u8> {
    encode_exception(
        flavor,
        &header.name,
        header.seqid,
        thrift::ApplicationErrorKind::InternalError,
        message,
    )
}

/// Runs `fut` bounded by `limit` (`None` when the bound passed first). The
/// timer is only set up when `fut` cannot finish at once: most reads and
/// writes of a call complete on their first poll, and then cost no clock
/// read and no timer.
async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(output) => Some(output),
        Poll::Pending => tokio::time::timeout(limit, fut).await.ok(),
    }
}

/// Writes `bytes` to the client, bounded by `timeouts.idle` (a client that
/// does not read its answers is dropped). Returns whether it worked.
async fn write_client(client: &mut TcpStream, out: &Outgoing, idle: Duration) -> bool {
    matches!(within(idle, out.write_to(client)).await, Some(Ok(())))
}

/// Writes raw bytes to the client, bounded by `timeouts.idle`.
async fn write_client_bytes(client: &mut TcpStream, bytes: &[u8], idle: Duration) -> bool {
    matches!(within(idle, client.write_all(bytes)).await, Some(Ok(())))
}

#[cfg(test)]
mod tests;
