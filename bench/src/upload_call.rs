//! An `upload` call encoded once and put on the wire many times.
//!
//! The load generator shares one CPU with nothing but itself, and for a
//! 1 MiB upload the generated client spends most of it copying: the payload
//! into a fresh `UploadRequest` (`to_vec`), then into the framed transport's
//! buffer, then into the kernel. On this VM that client cost 270–720 µs per
//! upload, enough to make the load generator, not the proxy under test, the
//! bottleneck of the data-path workload (bench/README.md, eleventh round).
//! Here the call's arguments are encoded once, by the generated types
//! themselves, and each call adds only its 22-byte frame and message header
//! (the sequence number changes) and hands them to `writev`: one copy, the
//! kernel's.
//!
//! The bytes on the wire and the `write()`s that carry them are exactly the
//! generated client's (tests check both): a frame larger than the client's
//! write buffer still goes as its length, then its message. Sending a 1 MiB
//! frame in one `writev` instead cost probegate and the responder behind it
//! about a tenth more CPU per upload, measured alternately (eleventh round),
//! and would have changed what every target receives.

use std::io::{self, IoSlice, Write};

use thrift::protocol::{
    TBinaryOutputProtocol, TFieldIdentifier, TMessageIdentifier, TMessageType, TOutputProtocol,
    TSerializable, TStructIdentifier, TType,
};
use uploader_idl::UploadRequest;

use crate::client::{Writes, ONE_WRITE_MAX};

/// The content type every bench upload declares (the payload is a PNG).
pub const CONTENT_TYPE: &str = "image/png";

/// The method name in the message header.
const METHOD: &str = "upload";

/// An `upload(req)` call's arguments, encoded (strict binary protocol).
#[derive(Debug)]
pub struct EncodedUpload {
    /// The argument struct, field stop included: everything after the
    /// message header.
    args: Vec<u8>,
    /// The image's size, which the reply's `size` must equal.
    payload_len: usize,
}

impl EncodedUpload {
    /// Encodes `upload(UploadRequest { data, content_type: "image/png" })`.
    pub fn new(data: &[u8]) -> EncodedUpload {
        let request = UploadRequest::new(data.to_vec(), None, Some(CONTENT_TYPE.to_string()));
        let mut args = Vec::with_capacity(data.len() + 64);
        let mut o = TBinaryOutputProtocol::new(&mut args, true);
        // Writing into a Vec cannot fail.
        let written = o
            .write_struct_begin(&TStructIdentifier::new("upload_args"))
            .and_then(|()| o.write_field_begin(&TFieldIdentifier::new("req", TType::Struct, 1)))
            .and_then(|()| request.write_to_out_protocol(&mut o))
            .and_then(|()| o.write_field_end())
            .and_then(|()| o.write_field_stop())
            .and_then(|()| o.write_struct_end())
            .and_then(|()| o.write_message_end());
        debug_assert!(written.is_ok(), "encoding into memory: {written:?}");
        EncodedUpload {
            args,
            payload_len: data.len(),
        }
    }

    /// The image's size in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The frame's length prefix and the message header of call `seq`.
    pub fn header(&self, seq: i32) -> Vec<u8> {
        let mut message = Vec::with_capacity(32);
        let mut o = TBinaryOutputProtocol::new(&mut message, true);
        let written =
            o.write_message_begin(&TMessageIdentifier::new(METHOD, TMessageType::Call, seq));
        debug_assert!(written.is_ok(), "encoding into memory: {written:?}");
        let frame_len = (message.len() + self.args.len()) as u32;
        let mut header = frame_len.to_be_bytes().to_vec();
        header.extend_from_slice(&message);
        header
    }

    /// Writes call `seq` as one frame on `stream`, in the `write()`s the
    /// generated client behind [`crate::client::Conn`]'s write buffer makes:
    /// with [`Writes::One`] the whole frame in one `writev` (unless the
    /// socket takes it in parts) when it fits [`ONE_WRITE_MAX`]; otherwise,
    /// and always with [`Writes::Two`], the 4-byte length first, then the
    /// message.
    pub fn send(&self, stream: &mut impl Write, seq: i32, writes: Writes) -> io::Result<()> {
        let header = self.header(seq);
        let (length, message_header) = header.split_at(4);
        if writes == Writes::Two || header.len() + self.args.len() > ONE_WRITE_MAX {
            write_all_vectored(stream, &mut [IoSlice::new(length)])?;
            return write_all_vectored(
                stream,
                &mut [IoSlice::new(message_header), IoSlice::new(&self.args)],
            );
        }
        write_all_vectored(
            stream,
            &mut [IoSlice::new(&header), IoSlice::new(&self.args)],
        )
    }
}

/// `write_all` for several buffers, each `writev` taking what it can.
fn write_all_vectored(stream: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !parts.is_empty() {
        match stream.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufWriter, Cursor};
    use thrift::protocol::TBinaryInputProtocol;
    use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};
    use uploader_idl::{TUploaderSyncClient, UploaderSyncClient};

    /// What the generated client writes for its first `upload(data)`, and
    /// the sizes of the `write()`s it makes behind the connection's write
    /// buffer.
    fn generated(data: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let mut wire = Recorder::default();
        {
            let output = BufWriter::with_capacity(ONE_WRITE_MAX, &mut wire);
            let output = TBinaryOutputProtocol::new(TFramedWriteTransport::new(output), true);
            // No reply to read: the call fails after writing, which is all
            // this looks at.
            let input =
                TBinaryInputProtocol::new(TFramedReadTransport::new(Cursor::new(vec![])), true);
            let mut client = UploaderSyncClient::new(input, output);
            let request = UploadRequest::new(data.to_vec(), None, Some(CONTENT_TYPE.to_string()));
            assert!(
                client.upload(request).is_err(),
                "no reply was there to read"
            );
        }
        (wire.bytes, wire.writes)
    }

    /// A writer that keeps the bytes and the size of each `write()` or
    /// `writev()` (taking at most `limit` bytes per call when set).
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        writes: Vec<usize>,
        limit: Option<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut room = self.limit.unwrap_or(usize::MAX);
            let mut taken = 0;
            for b in bufs {
                let n = b.len().min(room);
                self.bytes.extend_from_slice(&b[..n]);
                (taken, room) = (taken + n, room - n);
            }
            self.writes.push(taken);
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sent(call: &EncodedUpload, seq: i32, writes: Writes, limit: Option<usize>) -> Recorder {
        let mut wire = Recorder {
            limit,
            ..Recorder::default()
        };
        call.send(&mut wire, seq, writes).expect("send into memory");
        wire
    }

    #[test]
    fn the_bytes_and_writes_are_the_generated_clients() {
        for size in [10, 60 * 1024, 200 * 1024, 1024 * 1024] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let (bytes, writes) = generated(&data);
            let call = EncodedUpload::new(&data);
            assert_eq!(call.payload_len(), size);
            let wire = sent(&call, 1, Writes::One, None);
            assert!(
                wire.bytes == bytes,
                "{size}-byte upload: bytes differ from the generated client's"
            );
            assert_eq!(wire.writes, writes, "{size}-byte upload: write() sizes");
        }
    }

    #[test]
    fn small_frames_go_in_one_write_and_large_ones_as_length_then_message() {
        let small = sent(&EncodedUpload::new(&[1; 1000]), 5, Writes::One, None);
        assert_eq!(small.writes, vec![small.bytes.len()]);
        let large = sent(&EncodedUpload::new(&[1; 100_000]), 5, Writes::One, None);
        assert_eq!(large.writes, vec![4, large.bytes.len() - 4]);
        let two = sent(&EncodedUpload::new(&[1; 1000]), 5, Writes::Two, None);
        assert_eq!(two.writes, vec![4, two.bytes.len() - 4]);
    }

    #[test]
    fn each_call_carries_its_sequence_number_and_the_frame_its_length() {
        let call = EncodedUpload::new(b"png");
        let wire = sent(&call, 0x0102_0304, Writes::One, None);
        let frame_len = u32::from_be_bytes(wire.bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(frame_len, wire.bytes.len() - 4);
        // Strict header: version and type, the name's length, "upload", then the number.
        assert_eq!(&wire.bytes[8..18], b"\0\0\0\x06upload");
        assert_eq!(&wire.bytes[18..22], &[1, 2, 3, 4]);
    }

    #[test]
    fn a_socket_taking_the_frame_in_parts_gets_all_of_it_in_order() {
        let call = EncodedUpload::new(&[9; 300_000]);
        let whole = sent(&call, 7, Writes::One, None);
        let parts = sent(&call, 7, Writes::One, Some(7_000));
        assert!(
            parts.bytes == whole.bytes,
            "bytes differ when written in parts"
        );
        assert!(parts.writes.len() > 40, "{:?}", parts.writes.len());
    }
}
