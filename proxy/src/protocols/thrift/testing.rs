//! Test helper: real messages, produced by the generated Uploader client
//! writing into memory, in any flavor.

use std::cell::RefCell;
use std::io::{self, Cursor, Write};
use std::rc::Rc;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::transport::TFramedWriteTransport;
use uploader_idl::UploaderSyncClient;

use super::{Flavor, Protocol, Transport};

/// The generated client, writing into memory and reading from nothing: each
/// call writes its request, then fails to read a reply (oneway calls succeed).
pub type Client = UploaderSyncClient<Box<dyn TInputProtocol>, Box<dyn TOutputProtocol>>;

#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Everything `calls` made the client write, in `flavor`. Seqids start at 1.
pub fn written_by_client(flavor: Flavor, calls: impl FnOnce(&mut Client)) -> Vec<u8> {
    let sink = Shared::default();
    let write: Box<dyn Write> = match flavor.transport {
        Transport::Framed => Box::new(TFramedWriteTransport::new(sink.clone())),
        Transport::Buffered => Box::new(sink.clone()),
    };
    let read = Cursor::new(Vec::new());
    let (input, output): (Box<dyn TInputProtocol>, Box<dyn TOutputProtocol>) = match flavor.protocol
    {
        Protocol::Binary => (
            Box::new(TBinaryInputProtocol::new(read, true)),
            Box::new(TBinaryOutputProtocol::new(write, true)),
        ),
        Protocol::Compact => (
            Box::new(TCompactInputProtocol::new(read)),
            Box::new(TCompactOutputProtocol::new(write)),
        ),
    };
    let mut client = UploaderSyncClient::new(input, output);
    calls(&mut client);
    drop(client);
    let bytes = sink.0.borrow().clone();
    bytes
}

/// One `upload` call carrying `data`.
pub fn upload_call(flavor: Flavor, data: Vec<u8>) -> Vec<u8> {
    use uploader_idl::{TUploaderSyncClient, UploadRequest};
    written_by_client(flavor, |c| {
        let req = UploadRequest::new(data, "cat.png".to_string(), "image/png".to_string());
        // No reply to read: the call fails after writing, as intended.
        let _ = c.upload(req);
    })
}
