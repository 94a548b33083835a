//! The Rust client of the Uploader service, for the CLI and for tests.
//!
//! A thin layer over the generated `UploaderSyncClient`: it connects with a
//! bounded wait, sets socket timeouts so no call can hang forever, speaks the
//! chosen transport and protocol, and turns the service's `UploadError` into
//! a typed error whose message names the code.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport,
    TIoChannel, TTcpChannel,
};
use thrift::ApplicationError;
use uploader_idl::{
    TUploaderSyncClient, UploadError, UploadRequest, UploadResult, UploaderSyncClient,
    ERROR_CONTENT_TYPE_MISMATCH, ERROR_EMPTY, ERROR_INTEGRITY, ERROR_INVALID_IMAGE,
    ERROR_STORAGE_UNAVAILABLE, ERROR_TOO_LARGE,
};

pub use crate::flavor::{Flavor, Protocol, Transport};

/// The symbolic name of an `UploadError` code, e.g. `ERROR_TOO_LARGE`.
pub fn error_name(code: i32) -> &'static str {
    match code {
        ERROR_EMPTY => "ERROR_EMPTY",
        ERROR_TOO_LARGE => "ERROR_TOO_LARGE",
        ERROR_INVALID_IMAGE => "ERROR_INVALID_IMAGE",
        ERROR_CONTENT_TYPE_MISMATCH => "ERROR_CONTENT_TYPE_MISMATCH",
        ERROR_STORAGE_UNAVAILABLE => "ERROR_STORAGE_UNAVAILABLE",
        ERROR_INTEGRITY => "ERROR_INTEGRITY",
        _ => "ERROR_UNKNOWN",
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    /// The service refused the upload; `code` is one of the `ERROR_*` values.
    #[error("{} ({}): {}", error_name(.0.code), .0.code, .0.message)]
    Upload(UploadError),
    /// The server answered with a Thrift exception (unknown method, overload
    /// reported by a proxy, an internal error).
    #[error("server exception ({:?}): {}", .0.kind, .0.message)]
    Application(ApplicationError),
    /// The connection or the bytes on it failed (timeout, reset, bad reply).
    #[error("{}", crate::thrift_error::describe(.0))]
    Thrift(thrift::Error),
}

impl ClientError {
    /// The `UploadError` code, when the service refused the upload.
    pub fn upload_code(&self) -> Option<i32> {
        match self {
            ClientError::Upload(e) => Some(e.code),
            _ => None,
        }
    }
}

impl From<thrift::Error> for ClientError {
    fn from(e: thrift::Error) -> Self {
        match e {
            thrift::Error::User(user) => match user.downcast::<UploadError>() {
                Ok(upload) => ClientError::Upload(*upload),
                Err(other) => ClientError::Thrift(thrift::Error::User(other)),
            },
            thrift::Error::Application(app) => ClientError::Application(app),
            other => ClientError::Thrift(other),
        }
    }
}

type Inner = UploaderSyncClient<Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>>;

/// One connection to an Uploader server (or to probegate in front of one).
pub struct Client {
    inner: Inner,
    peer: SocketAddr,
    flavor: Flavor,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects within `timeout` and uses it as the socket read and write
    /// timeout of every later call. `Duration::ZERO` means no timeout.
    pub fn connect(
        addr: impl ToSocketAddrs + std::fmt::Display,
        flavor: Flavor,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let connect_error = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let candidates: Vec<SocketAddr> = addr.to_socket_addrs().map_err(connect_error)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
        let mut stream = None;
        for candidate in candidates {
            let attempt = if timeout.is_zero() {
                TcpStream::connect(candidate)
            } else {
                TcpStream::connect_timeout(&candidate, timeout)
            };
            match attempt {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| connect_error(last))?;
        Client::from_stream(stream, flavor, timeout).map_err(connect_error)
    }

    /// Wraps an already-connected stream.
    pub fn from_stream(stream: TcpStream, flavor: Flavor, timeout: Duration) -> io::Result<Client> {
        let limit = (!timeout.is_zero()).then_some(timeout);
        stream.set_nodelay(true)?;
        stream.set_read_timeout(limit)?;
        stream.set_write_timeout(limit)?;
        let peer = stream.peer_addr()?;
        let (read_half, write_half) = TTcpChannel::with_stream(stream)
            .split()
            .map_err(|e| io::Error::other(crate::thrift_error::describe(&e)))?;
        let (read, write): (Box<dyn io::Read + Send>, Box<dyn io::Write + Send>) =
            match flavor.transport {
                Transport::Framed => (
                    Box::new(TFramedReadTransport::new(read_half)),
                    Box::new(TFramedWriteTransport::new(write_half)),
                ),
                Transport::Buffered => (
                    Box::new(TBufferedReadTransport::new(read_half)),
                    Box::new(TBufferedWriteTransport::new(write_half)),
                ),
            };
        let (input, output): (
            Box<dyn TInputProtocol + Send>,
            Box<dyn TOutputProtocol + Send>,
        ) = match flavor.protocol {
            Protocol::Binary => (
                Box::new(TBinaryInputProtocol::new(read, true)),
                Box::new(TBinaryOutputProtocol::new(write, true)),
            ),
            Protocol::Compact => (
                Box::new(TCompactInputProtocol::new(read)),
                Box::new(TCompactOutputProtocol::new(write)),
            ),
        };
        Ok(Client {
            inner: UploaderSyncClient::new(input, output),
            peer,
            flavor,
        })
    }

    /// The address actually connected to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Returns the server's answer, `"pong"`.
    pub fn ping(&mut self) -> Result<String, ClientError> {
        Ok(self.inner.ping()?)
    }

    /// Uploads an image. `content_type`, when given, must match the bytes.
    pub fn upload(
        &mut self,
        data: Vec<u8>,
        filename: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<UploadResult, ClientError> {
        let req = UploadRequest::new(
            data,
            filename.map(str::to_string),
            content_type.map(str::to_string),
        );
        Ok(self.inner.upload(req)?)
    }

    /// Sends a oneway note; no reply is read.
    pub fn touch(&mut self, note: &str) -> Result<(), ClientError> {
        Ok(self.inner.touch(note.to_string())?)
    }
}
