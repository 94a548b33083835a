//! A Thrift client of the Uploader service for tests, in any flavour.
//!
//! Built directly on the generated `UploaderSyncClient` and the `thrift`
//! crate's own transports and protocols, so it is independent of the
//! backend's code (it checks the backend rather than sharing its bugs). Every
//! socket operation has a timeout: a test never hangs on a starved server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport,
    TIoChannel, TTcpChannel,
};
use uploader_idl::{
    TUploaderSyncClient, UploadError, UploadRequest, UploadResult, UploaderSyncClient,
};

pub use crate::config::{Protocol, Transport};

/// Default bound on connect and on every read and write of a call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type Input = Box<dyn TInputProtocol + Send>;
type Output = Box<dyn TOutputProtocol + Send>;

/// How a call failed, with the typed exceptions pulled out.
#[derive(Debug)]
pub enum CallError {
    /// The service's declared exception; `code` is one of `ERROR_*`.
    Upload(UploadError),
    /// A `TApplicationException` (unknown method, overload from a proxy...).
    Application(thrift::ApplicationError),
    /// The connection failed: refused, reset, timed out, closed.
    Transport(thrift::TransportError),
    /// The reply could not be decoded.
    Protocol(thrift::ProtocolError),
    /// Any other user exception.
    Other(String),
}

impl CallError {
    /// The `UploadError` code, when the failure is one.
    pub fn upload_code(&self) -> Option<i32> {
        match self {
            CallError::Upload(e) => Some(e.code),
            _ => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Upload(e) => write!(f, "UploadError {}: {}", e.code, e.message),
            CallError::Application(e) => {
                write!(f, "TApplicationException {:?}: {}", e.kind, e.message)
            }
            CallError::Transport(e) => write!(f, "transport error {:?}: {}", e.kind, e.message),
            CallError::Protocol(e) => write!(f, "protocol error {:?}: {}", e.kind, e.message),
            CallError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<thrift::Error> for CallError {
    fn from(e: thrift::Error) -> CallError {
        match e {
            thrift::Error::Transport(t) => CallError::Transport(t),
            thrift::Error::Protocol(p) => CallError::Protocol(p),
            thrift::Error::Application(a) => CallError::Application(a),
            thrift::Error::User(u) => match u.downcast::<UploadError>() {
                Ok(upload) => CallError::Upload(*upload),
                Err(other) => CallError::Other(other.to_string()),
            },
        }
    }
}

/// One connection to an Uploader server (or to a proxy in front of one).
pub struct ThriftClient {
    inner: UploaderSyncClient<Input, Output>,
}

impl ThriftClient {
    /// Connects with the default flavour (framed, binary) and [`CALL_TIMEOUT`].
    pub fn connect(addr: SocketAddr) -> Result<ThriftClient, CallError> {
        ThriftClient::connect_with(addr, Transport::Framed, Protocol::Binary, CALL_TIMEOUT)
    }

    /// Connects with an explicit flavour; `timeout` bounds the connect and
    /// every socket read and write.
    pub fn connect_with(
        addr: SocketAddr,
        transport: Transport,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<ThriftClient, CallError> {
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_error)?;
        stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_nodelay(true).map_err(io_error)?;
        let (read, write) = TTcpChannel::with_stream(stream).split()?;
        let (read, write): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match transport {
            Transport::Framed => (
                Box::new(TFramedReadTransport::new(read)),
                Box::new(TFramedWriteTransport::new(write)),
            ),
            Transport::Buffered => (
                Box::new(TBufferedReadTransport::new(read)),
                Box::new(TBufferedWriteTransport::new(write)),
            ),
        };
        let (input, output): (Input, Output) = match protocol {
            Protocol::Binary => (
                Box::new(TBinaryInputProtocol::new(read, true)),
                Box::new(TBinaryOutputProtocol::new(write, true)),
            ),
            Protocol::Compact => (
                Box::new(TCompactInputProtocol::new(read)),
                Box::new(TCompactOutputProtocol::new(write)),
            ),
        };
        Ok(ThriftClient {
            inner: UploaderSyncClient::new(input, output),
        })
    }

    /// `ping()`; the service answers `"pong"`.
    pub fn ping(&mut self) -> Result<String, CallError> {
        Ok(self.inner.ping()?)
    }

    /// `upload(req)` with the optional fields given or not.
    pub fn upload(
        &mut self,
        data: &[u8],
        filename: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<UploadResult, CallError> {
        let req = UploadRequest::new(
            data.to_vec(),
            filename.map(str::to_string),
            content_type.map(str::to_string),
        );
        Ok(self.inner.upload(req)?)
    }

    /// The oneway `touch(note)`: returns once the call is written.
    pub fn touch(&mut self, note: &str) -> Result<(), CallError> {
        Ok(self.inner.touch(note.to_string())?)
    }
}

fn io_error(e: std::io::Error) -> CallError {
    CallError::Transport(thrift::TransportError::new(
        thrift::TransportErrorKind::Unknown,
        e.to_string(),
    ))
}

/// Connects and pings once: the simplest "is the Thrift path alive" check.
pub fn ping_once(addr: SocketAddr, timeout: Duration) -> Result<String, CallError> {
    ThriftClient::connect_with(addr, Transport::Framed, Protocol::Binary, timeout)?.ping()
}
