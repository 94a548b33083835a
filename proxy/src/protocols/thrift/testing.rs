//! Test helper: real messages, produced by the generated Uploader client
//! writing into memory, in any flavor. Built for unit tests, and with the
//! `testing` feature for the criterion benches (`proxy/benches`).

use std::cell::RefCell;
use std::io::{self, Cursor, Read, Write};
use std::rc::Rc;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::server::TProcessor;
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};
use uploader_idl::{
    UploadError, UploadRequest, UploadResult, UploaderSyncClient, UploaderSyncHandler,
    UploaderSyncProcessor, ERROR_INVALID_IMAGE,
};

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

/// A client whose every reply comes from `server`, called with the bytes the
/// client wrote since the last reply (its request, in the client's flavor).
pub fn client_served_by(
    flavor: Flavor,
    server: impl FnMut(Vec<u8>) -> Vec<u8> + 'static,
) -> Client {
    let sink = Shared::default();
    let write: Box<dyn Write> = match flavor.transport {
        Transport::Framed => Box::new(TFramedWriteTransport::new(sink.clone())),
        Transport::Buffered => Box::new(sink.clone()),
    };
    let replies = ReplyOnRead {
        written: sink,
        server: Box::new(server),
        pending: Cursor::new(Vec::new()),
    };
    let read: Box<dyn Read> = match flavor.transport {
        Transport::Framed => Box::new(TFramedReadTransport::new(replies)),
        Transport::Buffered => Box::new(replies),
    };
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
    UploaderSyncClient::new(input, output)
}

struct ReplyOnRead {
    written: Shared,
    server: Box<dyn FnMut(Vec<u8>) -> Vec<u8>>,
    pending: Cursor<Vec<u8>>,
}

impl Read for ReplyOnRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pending.position() as usize == self.pending.get_ref().len() {
            let request = std::mem::take(&mut *self.written.0.borrow_mut());
            self.pending = Cursor::new((self.server)(request));
        }
        self.pending.read(out)
    }
}

/// The generated processor with a small handler, serving one unframed
/// request in `protocol`: `ping` answers "pong"; `upload` of data starting
/// with "bad" throws UploadError(ERROR_INVALID_IMAGE), otherwise it returns
/// a result naming the data's length.
pub fn processor_reply(protocol: Protocol, request: Vec<u8>) -> Vec<u8> {
    let (out, result) = processor_answer(protocol, &request);
    if let Err(e) = result {
        panic!("processor failed: {e}");
    }
    out
}

/// What the processor wrote for one unframed request, and whether it
/// reported an error (an unknown method gets an exception written *and* an
/// error; a oneway call gets nothing written).
pub fn processor_answer(protocol: Protocol, request: &[u8]) -> (Vec<u8>, thrift::Result<()>) {
    let processor = UploaderSyncProcessor::new(Handler);
    let mut out = Vec::new();
    let read = Cursor::new(request);
    let result = match protocol {
        Protocol::Binary => processor.process(
            &mut TBinaryInputProtocol::new(read, true),
            &mut TBinaryOutputProtocol::new(&mut out, true),
        ),
        Protocol::Compact => processor.process(
            &mut TCompactInputProtocol::new(read),
            &mut TCompactOutputProtocol::new(&mut out),
        ),
    };
    (out, result)
}

/// The in-test Uploader handler: `ping` answers "pong"; `upload` of data
/// starting with "bad" throws UploadError(ERROR_INVALID_IMAGE), otherwise it
/// returns a result naming the data's length.
pub(crate) struct Handler;
impl UploaderSyncHandler for Handler {
    fn handle_ping(&self) -> thrift::Result<String> {
        Ok("pong".into())
    }
    fn handle_upload(&self, req: UploadRequest) -> thrift::Result<UploadResult> {
        if req.data.starts_with(b"bad") {
            return Err(thrift::Error::User(Box::new(UploadError::new(
                ERROR_INVALID_IMAGE,
                "not an image".into(),
            ))));
        }
        Ok(UploadResult::new(
            format!("http://img/{}", req.data.len()),
            "k".into(),
            req.data.len() as i64,
            req.content_type,
            None,
        ))
    }
    fn handle_touch(&self, _note: String) -> thrift::Result<()> {
        Ok(())
    }
}
