//! Opening loopback connections (optionally from a chosen source address)
//! and the blocking Thrift client the load generator drives over them.
//!
//! The client is the generated `UploaderSyncClient` over framed transport
//! and strict binary protocol, the backend's defaults, so the bench speaks
//! exactly what a real client speaks; uploads are sent pre-encoded
//! (`upload_call`), the same bytes in the same writes with two copies fewer. How it puts a call on the wire is a
//! choice ([`Writes`]): in one `write()` like Thrift's C++, Java, Python and
//! Go clients (the default), or in two like the Rust crate's framed writer
//! on a bare socket.

use std::io::{self, BufWriter};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use thrift::protocol::{
    verify_expected_message_type, verify_expected_sequence_number, verify_expected_service_call,
    TBinaryInputProtocol, TBinaryOutputProtocol, TInputProtocol, TMessageType, TSerializable,
    TType,
};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};
use thrift::TThriftClient;
use uploader_idl::{TUploaderSyncClient, UploadError, UploadResult, UploaderSyncClient};

use crate::upload_call::EncodedUpload;

/// The generated client over one framed, binary TCP connection.
pub type ThriftClient = UploaderSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<TcpStream>>,
    TBinaryOutputProtocol<TFramedWriteTransport<BufWriter<TcpStream>>>,
>;

/// How many `write()`s put one framed call on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Writes {
    /// The whole frame in one `write()`, as Thrift's C++, Java, Python and
    /// Go clients send it (for calls up to [`ONE_WRITE_MAX`]; larger ones
    /// go as the length, then the message).
    #[default]
    One,
    /// The 4-byte length, then the message: the Rust `thrift` crate's
    /// `TFramedWriteTransport` straight on the socket. Each call then
    /// arrives as two segments, which makes every receiver (proxy or
    /// backend) send an ACK of its own per call.
    Two,
}

impl Writes {
    /// The value as given on the command line (and in results.jsonl).
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// How the output notes say it.
    pub fn describe(self) -> String {
        match self {
            Writes::One => format!(
                "each call of up to {} KiB in one write() (like Thrift's C++, Java, Python and Go clients); larger ones (uploads) as length, then message",
                ONE_WRITE_MAX / 1024
            ),
            Writes::Two => "each call in two write()s, length then message (the Rust thrift crate's framed writer on a bare socket)".to_string(),
        }
    }
}

/// The largest frame [`Writes::One`] writes at once (the write buffer).
pub const ONE_WRITE_MAX: usize = 64 * 1024;

/// Connects to `addr`, from `source` when given (bound before connecting,
/// port chosen by the kernel), within `timeout`.
pub fn dial(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = source {
        socket.set_reuse_address(true)?;
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    socket.connect_timeout(&SockAddr::from(addr), timeout)?;
    Ok(socket)
}

/// A Thrift client plus a second handle on its socket, so another thread can
/// shut the connection down to unblock a call stuck waiting for a reply.
pub struct Conn {
    pub client: ThriftClient,
    pub handle: TcpStream,
    /// How calls this connection sends are written.
    writes: Writes,
}

impl Conn {
    /// Opens a connection with the given per-read/-write timeout.
    pub fn open(
        addr: SocketAddr,
        connect_timeout: Duration,
        io_timeout: Duration,
        writes: Writes,
    ) -> io::Result<Conn> {
        let stream: TcpStream = dial(addr, None, connect_timeout)?.into();
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        let read_half = stream.try_clone()?;
        let write_half = stream.try_clone()?;
        let input = TBinaryInputProtocol::new(TFramedReadTransport::new(read_half), true);
        // An unbuffered BufWriter passes each write straight through.
        let buffer = match writes {
            Writes::One => ONE_WRITE_MAX,
            Writes::Two => 0,
        };
        let write_half = BufWriter::with_capacity(buffer, write_half);
        let output = TBinaryOutputProtocol::new(TFramedWriteTransport::new(write_half), true);
        Ok(Conn {
            client: UploaderSyncClient::new(input, output),
            handle: stream,
            writes,
        })
    }

    /// `ping()`, expecting `"pong"`.
    pub fn ping(&mut self) -> Result<(), String> {
        match self.client.ping() {
            Ok(reply) if reply == "pong" => Ok(()),
            Ok(other) => Err(format!("ping answered {other:?}, expected \"pong\"")),
            Err(e) => Err(describe(&e)),
        }
    }

    /// `upload(data)`, expecting the stored size to equal the bytes sent.
    pub fn upload(&mut self, data: &[u8]) -> Result<(), String> {
        self.send_upload(&EncodedUpload::new(data))
    }

    /// The `upload` call encoded in `call`, expecting the stored size to
    /// equal its payload's: the load generator's way, which copies the
    /// payload once per call (into the kernel) instead of three times.
    pub fn send_upload(&mut self, call: &EncodedUpload) -> Result<(), String> {
        let seq = self.client.increment_sequence_number();
        call.send(&mut self.handle, seq, self.writes)
            .map_err(|e| describe(&thrift::Error::from(e)))?;
        match read_upload_reply(self.client.i_prot_mut(), seq) {
            Ok(result) if result.size == call.payload_len() as i64 => Ok(()),
            Ok(result) => Err(format!(
                "upload stored {} bytes, sent {}",
                result.size,
                call.payload_len()
            )),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// Reads the reply to `upload` call `seq` as the generated client does:
/// the result struct's field 0 is the `UploadResult`, field 1 the declared
/// `UploadError`.
fn read_upload_reply(i: &mut dyn TInputProtocol, seq: i32) -> thrift::Result<UploadResult> {
    let ident = i.read_message_begin()?;
    verify_expected_sequence_number(seq, ident.sequence_number)?;
    verify_expected_service_call("upload", &ident.name)?;
    if ident.message_type == TMessageType::Exception {
        let remote = thrift::Error::read_application_error_from_in_protocol(i)?;
        i.read_message_end()?;
        return Err(thrift::Error::Application(remote));
    }
    verify_expected_message_type(TMessageType::Reply, ident.message_type)?;
    let (mut success, mut declared) = (None, None);
    i.read_struct_begin()?;
    loop {
        let field = i.read_field_begin()?;
        if field.field_type == TType::Stop {
            break;
        }
        match field.id {
            Some(0) => success = Some(UploadResult::read_from_in_protocol(i)?),
            Some(1) => declared = Some(UploadError::read_from_in_protocol(i)?),
            _ => i.skip(field.field_type)?,
        }
        i.read_field_end()?;
    }
    i.read_struct_end()?;
    i.read_message_end()?;
    match (success, declared) {
        (Some(result), _) => Ok(result),
        (None, Some(e)) => Err(thrift::Error::User(Box::new(e))),
        (None, None) => Err(thrift::Error::Application(thrift::ApplicationError::new(
            thrift::ApplicationErrorKind::MissingResult,
            "no result received for upload",
        ))),
    }
}

/// A Thrift error with its kind and message: the crate's `Display` for a
/// transport error says only "transport error".
pub fn describe(e: &thrift::Error) -> String {
    match e {
        // A socket read timeout surfaces as EAGAIN wrapped in `Unknown`.
        thrift::Error::Transport(t) if t.message.contains("os error 11") => {
            "no reply within the socket timeout".to_string()
        }
        thrift::Error::Transport(t) => format!("transport {:?}: {}", t.kind, t.message),
        thrift::Error::Protocol(p) => format!("protocol {:?}: {}", p.kind, p.message),
        thrift::Error::Application(a) => format!("application {:?}: {}", a.kind, a.message),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::{TransportError, TransportErrorKind};

    #[test]
    fn client_writes_are_named_as_on_the_command_line() {
        assert_eq!(Writes::One.name(), "one");
        assert_eq!(Writes::Two.name(), "two");
    }

    #[test]
    fn timeouts_are_named() {
        let e = thrift::Error::Transport(TransportError::new(
            TransportErrorKind::Unknown,
            "Resource temporarily unavailable (os error 11)",
        ));
        assert_eq!(describe(&e), "no reply within the socket timeout");
        let e =
            thrift::Error::Transport(TransportError::new(TransportErrorKind::EndOfFile, "closed"));
        assert_eq!(describe(&e), "transport EndOfFile: closed");
    }
}
