//! One Thrift connection, served to its end by one worker thread.
//!
//! This is Apache Thrift's thread-per-connection model on purpose (it is the
//! backend the incident is about): a worker reads a request, runs it, writes
//! the reply and reads again until the connection ends. What this file adds
//! is knowing *how* it ended. The socket halves are wrapped in `Watch`, which
//! records what the socket itself reported, because by the time an error
//! reaches us through the `thrift` crate a read timeout is just "transport
//! error". From that record each ending is counted: a peer that went away
//! before completing a request (what a load balancer's TCP health check
//! looks like) and an expired read timeout are expected, counted and logged
//! at debug; anything else is logged as a warning.
//!
//! Requests are dispatched here rather than by `UploaderSyncProcessor::process`
//! so that the method name is counted (`uploader_requests_total{method}`) and
//! an unknown method's arguments are skipped: the generated processor answers
//! an unknown method but leaves its arguments unread, which desynchronises
//! the stream. Known methods run through the generated
//! `TUploaderProcessFunctions`, exactly as the processor would run them.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol, TType,
};
use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel};
use thrift::{ApplicationError, ApplicationErrorKind, TConfiguration};
use uploader_idl::TUploaderProcessFunctions;

use crate::flavor::{Flavor, Protocol, Transport};
use crate::framed::CappedFramedReadTransport;
use crate::framed_write::FramedWriteTransport;
use crate::handler::Handler;
use crate::metrics::{Method, Metrics};
use crate::thrift_error::describe;

/// What every connection needs, shared by all workers.
#[derive(Debug)]
pub struct ConnectionContext {
    pub handler: Handler,
    pub metrics: Metrics,
    pub flavor: Flavor,
    /// Largest frame, and largest string or binary field, a client may send.
    pub max_frame: usize,
}

/// What the socket reported, shared between the two halves and the worker.
#[derive(Debug, Default)]
struct SocketRecord {
    bytes_read: u64,
    /// A read returned 0: the peer closed its side.
    read_eof: bool,
    read_error: Option<io::ErrorKind>,
    write_error: Option<io::ErrorKind>,
}

/// A socket half that records what happened to it in a `SocketRecord`.
struct Watch<C> {
    inner: C,
    record: Arc<Mutex<SocketRecord>>,
}

impl<C> Watch<C> {
    fn note(&self, f: impl FnOnce(&mut SocketRecord)) {
        if let Ok(mut record) = self.record.lock() {
            f(&mut record);
        }
    }
}

impl<C: Read> Read for Watch<C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read(buf);
        match &result {
            Ok(0) if !buf.is_empty() => self.note(|r| r.read_eof = true),
            Ok(n) => self.note(|r| r.bytes_read += *n as u64),
            Err(e) => {
                let kind = e.kind();
                self.note(|r| r.read_error = Some(kind));
            }
        }
        result
    }
}

impl<C: Write> Write for Watch<C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        if let Err(e) = &result {
            let kind = e.kind();
            self.note(|r| r.write_error = Some(kind));
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.inner.flush();
        if let Err(e) = &result {
            let kind = e.kind();
            self.note(|r| r.write_error = Some(kind));
        }
        result
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The peer closed or reset after at least one complete request.
    Closed,
    /// The peer closed or reset before completing any request.
    IdleClosed,
    /// `server.read_timeout` expired while waiting for bytes.
    ReadTimeout,
    /// `server.write_timeout` expired or the reply could not be written.
    WriteFailed,
    /// The bytes were not a valid request (bad frame, bad protocol, too big).
    Invalid,
}

/// Serves `stream` until it ends; returns how it ended (already counted).
pub fn serve(stream: TcpStream, peer: SocketAddr, ctx: &ConnectionContext) -> Ending {
    let record = Arc::new(Mutex::new(SocketRecord::default()));
    let (mut input, mut output) = match protocols(stream, ctx, &record) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(peer = %peer, error = %describe(&e), "cannot set up the connection");
            return Ending::WriteFailed;
        }
    };
    let mut completed: u64 = 0;
    let error = loop {
        match dispatch(ctx, &mut *input, &mut *output) {
            Ok(()) => completed += 1,
            Err(e) => break e,
        }
    };
    let record = record
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    let ending = classify(&record, completed);
    match ending {
        Ending::IdleClosed => {
            ctx.metrics.connections_idle_closed.inc();
            tracing::debug!(peer = %peer, bytes_read = record.bytes_read, "connection closed before any request");
        }
        Ending::ReadTimeout => {
            ctx.metrics.read_timeouts.inc();
            tracing::debug!(peer = %peer, requests = completed, bytes_read = record.bytes_read, "read timeout; connection closed");
        }
        Ending::Closed => {
            tracing::debug!(peer = %peer, requests = completed, "connection closed by the client");
        }
        Ending::WriteFailed => {
            tracing::warn!(peer = %peer, requests = completed, error = %describe(&error), "cannot write to the client; connection closed");
        }
        Ending::Invalid => {
            tracing::warn!(peer = %peer, requests = completed, error = %describe(&error), "invalid request; connection closed");
        }
    }
    ending
}

fn classify(record: &SocketRecord, completed: u64) -> Ending {
    use io::ErrorKind::*;
    let gone = record.read_eof
        || matches!(
            record.read_error,
            Some(ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
        );
    if matches!(record.read_error, Some(WouldBlock | TimedOut)) {
        Ending::ReadTimeout
    } else if gone && completed == 0 {
        Ending::IdleClosed
    } else if gone {
        Ending::Closed
    } else if record.write_error.is_some() {
        Ending::WriteFailed
    } else {
        Ending::Invalid
    }
}

type Protocols = (
    Box<dyn TInputProtocol + Send>,
    Box<dyn TOutputProtocol + Send>,
);

/// Wraps the socket in the configured transport and protocol, with string
/// and binary fields capped at `max_frame` so that a buffered-transport
/// client cannot make the server allocate more than that either.
/// Framed reads go through a buffer, so a small call (or several sent
/// together) takes one `read()` instead of one for the length and one for
/// the message; a framed reply leaves in one write (`framed_write.rs`).
fn protocols(
    stream: TcpStream,
    ctx: &ConnectionContext,
    record: &Arc<Mutex<SocketRecord>>,
) -> thrift::Result<Protocols> {
    let (read_half, write_half) = TTcpChannel::with_stream(stream).split()?;
    let reader = Watch {
        inner: read_half,
        record: Arc::clone(record),
    };
    let writer = Watch {
        inner: write_half,
        record: Arc::clone(record),
    };
    let limits = TConfiguration::builder()
        .max_frame_size(Some(ctx.max_frame))
        .max_string_size(Some(ctx.max_frame))
        .max_message_size(Some(ctx.max_frame))
        .build()?;
    let (read, write): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match ctx.flavor.transport {
        Transport::Framed => (
            Box::new(CappedFramedReadTransport::new(
                BufReader::with_capacity(SOCKET_BUFFER, reader),
                ctx.max_frame,
            )),
            Box::new(FramedWriteTransport::new(writer)),
        ),
        Transport::Buffered => (
            Box::new(TBufferedReadTransport::new(reader)),
            Box::new(TBufferedWriteTransport::new(writer)),
        ),
    };
    Ok(match ctx.flavor.protocol {
        Protocol::Binary => (
            Box::new(TBinaryInputProtocol::with_config(
                read,
                true,
                limits.clone(),
            )),
            Box::new(TBinaryOutputProtocol::with_config(write, true, limits)),
        ),
        Protocol::Compact => (
            Box::new(TCompactInputProtocol::with_config(read, limits.clone())),
            Box::new(TCompactOutputProtocol::with_config(write, limits)),
        ),
    })
}

/// Buffer under a framed connection's reads.
const SOCKET_BUFFER: usize = 16 * 1024;

/// Reads one request, runs it and writes its reply. An error means the
/// connection must end.
fn dispatch(
    ctx: &ConnectionContext,
    input: &mut dyn TInputProtocol,
    output: &mut dyn TOutputProtocol,
) -> thrift::Result<()> {
    let ident = input.read_message_begin()?;
    let method = Method::from_name(&ident.name);
    ctx.metrics.request(method);
    let seq = ident.sequence_number;
    let handler = &ctx.handler;
    let result = match method {
        Method::Ping => TUploaderProcessFunctions::process_ping(handler, seq, input, output),
        Method::Upload => TUploaderProcessFunctions::process_upload(handler, seq, input, output),
        Method::Touch => TUploaderProcessFunctions::process_touch(handler, seq, input, output),
        Method::Other => {
            input.skip(TType::Struct)?;
            input.read_message_end()?;
            Err(thrift::Error::Application(ApplicationError::new(
                ApplicationErrorKind::UnknownMethod,
                format!("unknown method {:?}", ident.name),
            )))
        }
    };
    match result {
        Ok(()) => Ok(()),
        // The request could be read but not run: the reply is an exception
        // and the connection stays usable.
        Err(thrift::Error::Application(e)) => thrift::server::handle_process_result(
            &ident,
            Err(thrift::Error::Application(e)),
            output,
        ),
        // The bytes did not decode (bad field, oversize string or binary):
        // the stream is out of step, so say why and end the connection.
        Err(e @ thrift::Error::Protocol(_)) => {
            let notice = ApplicationError::new(ApplicationErrorKind::ProtocolError, describe(&e));
            let _ = thrift::server::handle_process_result(
                &ident,
                Err(thrift::Error::Application(notice)),
                output,
            );
            Err(e)
        }
        // The socket failed or the peer went away: nobody to tell.
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io::ErrorKind::*;

    fn record(
        eof: bool,
        read_error: Option<io::ErrorKind>,
        write_error: Option<io::ErrorKind>,
    ) -> SocketRecord {
        SocketRecord {
            bytes_read: 0,
            read_eof: eof,
            read_error,
            write_error,
        }
    }

    #[test]
    fn endings_are_classified() {
        let cases = [
            (record(true, None, None), 0, Ending::IdleClosed),
            (
                record(false, Some(ConnectionReset), None),
                0,
                Ending::IdleClosed,
            ),
            (record(true, None, None), 3, Ending::Closed),
            (
                record(false, Some(WouldBlock), None),
                0,
                Ending::ReadTimeout,
            ),
            (record(false, Some(TimedOut), None), 5, Ending::ReadTimeout),
            (
                record(false, None, Some(BrokenPipe)),
                1,
                Ending::WriteFailed,
            ),
            (
                record(false, Some(ConnectionReset), Some(BrokenPipe)),
                0,
                Ending::IdleClosed,
            ),
            (record(false, None, None), 0, Ending::Invalid),
            (record(false, Some(InvalidData), None), 2, Ending::Invalid),
        ];
        for (rec, completed, want) in cases {
            assert_eq!(classify(&rec, completed), want, "{rec:?} after {completed}");
        }
    }
}
