//! Re-encoding a message for a peer that speaks another flavor.
//!
//! Lets a compact (or buffered) client use a binary (or framed) backend and
//! back: the message is read with the source protocol's reader and every
//! value written with the target protocol's writer, walking the body
//! generically by type (struct, list, set, map, primitives), so no IDL is
//! needed. The header (name, kind, seqid) is kept; the frame prefix is added
//! or removed as the transports require.

use std::io::{self, Write};

use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TMessageIdentifier, TOutputProtocol, TType,
};

use super::wire::{body_config, walk, Position, ReadFailure, Source};
use super::{Flavor, InvalidThrift, Protocol, Transport};

/// Re-encode one complete message from one flavor to another (name, type,
/// seqid, body kept). `message` must be exactly one message, as `delimit`
/// returns it (frame prefix included when `from` is framed). Between equal
/// flavors the bytes are returned as they are.
pub fn transcode(
    message: &[u8],
    from: Flavor,
    to: Flavor,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, InvalidThrift> {
    if from == to {
        return Ok(message.to_vec());
    }
    let body = match from.transport {
        Transport::Framed => unframe(message, max_frame_bytes)?,
        Transport::Buffered => message,
    };
    let framed = to.transport == Transport::Framed;
    let prefix = if framed { 4 } else { 0 };
    // Compact varints can grow eightfold as binary: stop writing at the cap
    // rather than building a huge message only to refuse it.
    let mut sink = Capped {
        out: Vec::with_capacity(body.len() + prefix),
        cap: max_frame_bytes.saturating_add(prefix),
        refused: None,
    };
    sink.out.resize(prefix, 0);

    let position = Position::default();
    let src = position.source(body, from.protocol);
    let header = src.read_header().map_err(|e| match e {
        ReadFailure::Eof => InvalidThrift::BadHeader("message ends inside its header".into()),
        ReadFailure::Bad(why) => InvalidThrift::BadHeader(why),
    })?;
    let id = TMessageIdentifier::from(&header);
    let copied = match to.protocol {
        Protocol::Binary => copy(
            &src,
            &id,
            &mut TBinaryOutputProtocol::new(&mut sink, true),
            to.protocol,
            max_frame_bytes,
        ),
        Protocol::Compact => copy(
            &src,
            &id,
            &mut TCompactOutputProtocol::new(&mut sink),
            to.protocol,
            max_frame_bytes,
        ),
    };
    if let Some(len) = sink.refused {
        return Err(InvalidThrift::FrameTooLarge {
            len: (len - prefix) as u64,
            max: max_frame_bytes,
        });
    }
    copied.map_err(|e| match e {
        ReadFailure::Eof => InvalidThrift::BadMessage(format!(
            "{:?} (seqid {}) is truncated: {} bytes",
            header.name,
            header.seqid,
            body.len()
        )),
        ReadFailure::Bad(why) => {
            InvalidThrift::BadMessage(format!("{:?} (seqid {}): {why}", header.name, header.seqid))
        }
    })?;
    if position.pos() != body.len() {
        return Err(InvalidThrift::BadMessage(format!(
            "{} bytes follow the message {:?}",
            body.len() - position.pos(),
            header.name
        )));
    }

    let mut out = sink.out;
    if framed {
        // The cap kept the body within max_frame_bytes; a frame length is a u32.
        let produced = out.len() - prefix;
        let len = u32::try_from(produced).map_err(|_| InvalidThrift::FrameTooLarge {
            len: produced as u64,
            max: max_frame_bytes,
        })?;
        out[..4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(out)
}

/// The output buffer, refusing to grow past `cap` bytes.
struct Capped {
    out: Vec<u8>,
    cap: usize,
    /// The length a refused write would have reached.
    refused: Option<usize>,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let len = self.out.len().saturating_add(b.len());
        if len > self.cap {
            self.refused = Some(len);
            return Err(io::Error::other("message exceeds limits.max_frame_bytes"));
        }
        self.out.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The body of a framed message, checked to be exactly one frame.
fn unframe(message: &[u8], max: usize) -> Result<&[u8], InvalidThrift> {
    let Some(&[a, b, c, d]) = message.get(..4) else {
        return Err(InvalidThrift::BadHeader(format!(
            "{} bytes are not a frame",
            message.len()
        )));
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    if u64::from(len) > max as u64 {
        return Err(InvalidThrift::FrameTooLarge {
            len: u64::from(len),
            max,
        });
    }
    let body = &message[4..];
    if body.len() != len as usize {
        return Err(InvalidThrift::BadMessage(format!(
            "frame length {len} but {} bytes given",
            body.len()
        )));
    }
    Ok(body)
}

fn copy(
    src: &Source<'_>,
    header: &TMessageIdentifier,
    out: &mut dyn TOutputProtocol,
    to: Protocol,
    max: usize,
) -> Result<(), ReadFailure> {
    out.write_message_begin(header)?;
    let compact_out = to == Protocol::Compact;
    src.with_input(body_config(max), |input| {
        walk(src, input, Some(&mut *out), compact_out, TType::Struct, 0)?;
        input.read_message_end().map_err(ReadFailure::from)
    })?;
    out.write_message_end()?;
    out.flush().map_err(ReadFailure::from)
}

#[cfg(test)]
mod tests {
    use thrift::protocol::TMessageType;
    use thrift::ApplicationErrorKind;
    use uploader_idl::{TUploaderSyncClient, UploadRequest, ERROR_INVALID_IMAGE};

    use super::*;
    use crate::protocols::thrift::testing::{
        client_served_by, processor_reply, upload_call, written_by_client,
    };
    use crate::protocols::thrift::{delimit, encode_exception, Delimit};

    const MAX: usize = 16_384_000;

    #[test]
    fn an_upload_is_what_the_other_flavors_client_would_have_sent() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        for from in Flavor::ALL {
            for to in Flavor::ALL {
                let got = transcode(&upload_call(from, data.clone()), from, to, MAX)
                    .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                assert!(got == upload_call(to, data.clone()), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn binary_to_compact_and_back_is_byte_identical() {
        for (binary, compact) in [
            (Flavor::FRAMED_BINARY, Flavor::FRAMED_COMPACT),
            (Flavor::BUFFERED_BINARY, Flavor::BUFFERED_COMPACT),
            (Flavor::FRAMED_BINARY, Flavor::BUFFERED_COMPACT),
        ] {
            let call = upload_call(binary, b"\x89PNG\r\n\x1a\n....".to_vec());
            let there = transcode(&call, binary, compact, MAX).expect("to compact");
            assert!(there.len() < call.len(), "compact is smaller");
            let back = transcode(&there, compact, binary, MAX).expect("back");
            assert_eq!(back, call, "{binary} -> {compact} -> {binary}");
        }
    }

    #[test]
    fn exceptions_keep_their_header_and_body() {
        for from in Flavor::ALL {
            for to in Flavor::ALL {
                let e = |f| encode_exception(f, "upload", 77, ApplicationErrorKind::Unknown, "m");
                assert_eq!(
                    transcode(&e(from), from, to, MAX),
                    Ok(e(to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn a_client_talks_to_a_server_of_another_flavor() {
        // Request transcoded to the server's flavor, the real processor
        // answers, the reply is transcoded back: the generated client sees
        // typed results and typed UploadErrors.
        for client in Flavor::ALL {
            for server in [Flavor::BUFFERED_BINARY, Flavor::BUFFERED_COMPACT] {
                let mut c = client_served_by(client, move |request| {
                    let call = transcode(&request, client, server, MAX).expect("call");
                    let reply = processor_reply(server.protocol, call);
                    transcode(&reply, server, client, MAX).expect("reply")
                });
                assert_eq!(c.ping().expect("ping"), "pong", "{client} via {server}");
                let ok = c
                    .upload(UploadRequest::new(
                        vec![1; 5000],
                        None,
                        "image/gif".to_string(),
                    ))
                    .expect("upload");
                assert_eq!(ok.url, "http://img/5000");
                assert_eq!(ok.content_type.as_deref(), Some("image/gif"));
                match c.upload(UploadRequest::new(b"bad bytes".to_vec(), None, None)) {
                    Err(thrift::Error::User(e)) => {
                        let e = e
                            .downcast::<uploader_idl::UploadError>()
                            .expect("an UploadError");
                        assert_eq!(e.code, ERROR_INVALID_IMAGE);
                        assert_eq!(e.message, "not an image");
                    }
                    other => panic!("{client} via {server}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn the_header_is_kept() {
        let call = written_by_client(Flavor::BUFFERED_COMPACT, |c| {
            c.touch("n".into()).expect("oneway");
        });
        let out = transcode(&call, Flavor::BUFFERED_COMPACT, Flavor::FRAMED_BINARY, MAX)
            .expect("transcode");
        match delimit(Flavor::FRAMED_BINARY, &out, MAX) {
            Ok(Delimit::Complete { len, header }) => {
                assert_eq!(len, out.len());
                assert_eq!(
                    (header.name.as_str(), header.kind, header.seqid),
                    ("touch", TMessageType::OneWay, 1)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incomplete_or_extra_bytes_are_refused() {
        let call = upload_call(Flavor::BUFFERED_BINARY, vec![9; 100]);
        let to = Flavor::BUFFERED_COMPACT;
        let cut = transcode(&call[..call.len() - 1], Flavor::BUFFERED_BINARY, to, MAX);
        assert!(matches!(cut, Err(InvalidThrift::BadMessage(_))), "{cut:?}");
        let mut extra = call.clone();
        extra.push(0);
        let extra = transcode(&extra, Flavor::BUFFERED_BINARY, to, MAX);
        assert!(
            matches!(extra, Err(InvalidThrift::BadMessage(_))),
            "{extra:?}"
        );
        let framed = upload_call(Flavor::FRAMED_BINARY, vec![9; 100]);
        let short = transcode(&framed[..50], Flavor::FRAMED_BINARY, to, MAX);
        assert!(
            matches!(short, Err(InvalidThrift::BadMessage(_))),
            "{short:?}"
        );
    }

    #[test]
    fn the_output_must_fit_the_frame_limit_too() {
        // Compact varints grow when written as fixed-width binary.
        let call = written_by_client(Flavor::BUFFERED_COMPACT, |c| {
            let _ = c.upload(UploadRequest::new(vec![], None, None));
        });
        let limit = call.len();
        let got = transcode(
            &call,
            Flavor::BUFFERED_COMPACT,
            Flavor::BUFFERED_BINARY,
            limit,
        );
        assert!(
            matches!(got, Err(InvalidThrift::FrameTooLarge { .. })),
            "{got:?}"
        );
    }

    #[test]
    fn field_ids_the_compact_writer_cannot_encode_are_refused_not_panicked_on() {
        // Args with field 32767 then field -32768: legal in binary, but the
        // compact writer's i16 delta would overflow.
        let mut call = written_by_client(Flavor::BUFFERED_BINARY, |c| {
            c.touch(String::new()).expect("oneway");
        });
        call.truncate(call.len() - 8); // keep the header
        call.extend_from_slice(&[0x08, 0x7F, 0xFF, 0, 0, 0, 1]); // i32 field 32767
        call.extend_from_slice(&[0x08, 0x80, 0x00, 0, 0, 0, 2]); // i32 field -32768
        call.push(0); // stop
        let from = Flavor::BUFFERED_BINARY;
        assert!(matches!(
            delimit(from, &call, MAX),
            Ok(Delimit::Complete { len, .. }) if len == call.len()
        ));
        assert!(transcode(&call, from, Flavor::FRAMED_BINARY, MAX).is_ok());
        let got = transcode(&call, from, Flavor::BUFFERED_COMPACT, MAX);
        assert!(matches!(got, Err(InvalidThrift::BadMessage(_))), "{got:?}");
    }

    #[test]
    fn growth_past_the_cap_stops_writing_at_the_cap() {
        use thrift::protocol::{
            TCompactOutputProtocol, TFieldIdentifier, TListIdentifier, TStructIdentifier,
        };
        // list<i64> of 100,000 zeros: one byte each in compact, eight in binary.
        let n = 100_000;
        let mut call = Vec::new();
        let mut o = TCompactOutputProtocol::new(&mut call);
        o.write_message_begin(&TMessageIdentifier::new("sum", TMessageType::Call, 1))
            .and_then(|()| o.write_struct_begin(&TStructIdentifier::new("args")))
            .and_then(|()| o.write_field_begin(&TFieldIdentifier::new("xs", TType::List, 1)))
            .and_then(|()| o.write_list_begin(&TListIdentifier::new(TType::I64, n)))
            .and_then(|()| (0..n).try_for_each(|_| o.write_i64(0)))
            .and_then(|()| o.write_list_end())
            .and_then(|()| o.write_field_end())
            .and_then(|()| o.write_field_stop())
            .and_then(|()| o.write_struct_end())
            .and_then(|()| o.write_message_end())
            .expect("write");
        drop(o);
        let limit = 2 * call.len();
        match transcode(
            &call,
            Flavor::BUFFERED_COMPACT,
            Flavor::FRAMED_BINARY,
            limit,
        ) {
            Err(InvalidThrift::FrameTooLarge { len, max }) => {
                assert_eq!(max, limit);
                assert!(len as usize <= limit + 8, "stopped at the cap: {len}");
            }
            other => panic!("{other:?}"),
        }
        let whole = transcode(&call, Flavor::BUFFERED_COMPACT, Flavor::FRAMED_BINARY, MAX)
            .expect("fits the default cap");
        assert!(whole.len() > 8 * n as usize);
    }
}
