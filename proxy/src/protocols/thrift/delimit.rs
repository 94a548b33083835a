//! Where one Thrift message ends, so that calls can be dispatched (and
//! replies returned) whole.
//!
//! Framed: the 4-byte length says it, once the frame is known to start with a
//! valid header. Buffered: the message is decoded with the `thrift` crate's
//! readers — header, then the argument (or result) struct walked by type —
//! and its end is where the reader stopped. Message kinds are not checked
//! here, so the same function delimits calls from clients and replies from
//! backends; `sniff` is where a client is held to calls.
//!
//! Callers re-run `delimit` as bytes arrive; [`Delimit::NeedMore`] carries a
//! lower bound on the buffer length worth retrying at (for a framed message
//! the whole frame, for a buffered one e.g. the end of a binary field whose
//! length is known), so a 10 MiB buffered upload is walked a handful of
//! times, not once per socket read.

use super::wire::{body_config, walk, Position, ReadFailure};
use super::{Flavor, InvalidThrift, MessageHeader, Protocol, Transport};
use thrift::protocol::TType;

/// How far the first message in a buffer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delimit {
    /// The first message is whole: `buf[..len]` (frame prefix included).
    Complete { len: usize, header: MessageHeader },
    /// Incomplete: retry once the buffer holds at least `at_least` bytes.
    NeedMore { at_least: usize },
}

/// Where the first whole message in `buf` ends (len includes the 4-byte frame
/// prefix when framed).
pub fn delimit(
    flavor: Flavor,
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<Delimit, InvalidThrift> {
    match flavor.transport {
        Transport::Framed => framed(flavor.protocol, buf, max_frame_bytes),
        Transport::Buffered => buffered(flavor.protocol, buf, max_frame_bytes),
    }
}

/// The header of the framed message starting `buf`, once its bytes are
/// there (whatever the frame's length): what a call must show before the
/// rest of it is taken on trust as opaque bytes.
pub fn frame_header(protocol: Protocol, buf: &[u8]) -> Option<MessageHeader> {
    let frame = buf.get(4..)?;
    Position::default()
        .source(frame, protocol)
        .read_header()
        .ok()
}

fn framed(protocol: Protocol, buf: &[u8], max: usize) -> Result<Delimit, InvalidThrift> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(Delimit::NeedMore { at_least: 4 });
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    if u64::from(len) > max as u64 {
        return Err(InvalidThrift::FrameTooLarge {
            len: u64::from(len),
            max,
        });
    }
    let end = 4 + len as usize;
    let frame = &buf[4..buf.len().min(end)];
    let position = Position::default();
    let header = position.source(frame, protocol).read_header();
    match header {
        Ok(header) if buf.len() >= end => Ok(Delimit::Complete { len: end, header }),
        Ok(_) => Ok(Delimit::NeedMore { at_least: end }),
        Err(ReadFailure::Eof) if buf.len() < end => Ok(Delimit::NeedMore { at_least: end }),
        Err(ReadFailure::Eof) => Err(InvalidThrift::BadHeader(format!(
            "a frame of {len} bytes ends inside its message header"
        ))),
        Err(ReadFailure::Bad(why)) => Err(InvalidThrift::BadHeader(why)),
    }
}

fn buffered(protocol: Protocol, buf: &[u8], max: usize) -> Result<Delimit, InvalidThrift> {
    let position = Position::default();
    let src = position.source(buf, protocol);
    let need_more = |position: &Position| {
        let at_least = position.at_least(buf.len());
        if at_least > max {
            Err(InvalidThrift::FrameTooLarge {
                len: at_least as u64,
                max,
            })
        } else {
            Ok(Delimit::NeedMore { at_least })
        }
    };
    let header = match src.read_header() {
        Ok(h) => h,
        Err(ReadFailure::Eof) => return need_more(&position),
        Err(ReadFailure::Bad(why)) => return Err(InvalidThrift::BadHeader(why)),
    };
    let body = src.with_input(body_config(max), |input| {
        walk(&src, input, None, false, TType::Struct, 0)?;
        input.read_message_end().map_err(ReadFailure::from)
    });
    match body {
        Ok(()) => {
            let len = position.pos();
            if len > max {
                return Err(InvalidThrift::FrameTooLarge {
                    len: len as u64,
                    max,
                });
            }
            Ok(Delimit::Complete { len, header })
        }
        Err(ReadFailure::Eof) => need_more(&position),
        Err(ReadFailure::Bad(why)) => Err(InvalidThrift::BadMessage(format!(
            "{} ({:?}, seqid {}): {why}",
            protocol_name(protocol),
            header.name,
            header.seqid
        ))),
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Binary => "binary",
        Protocol::Compact => "compact",
    }
}

#[cfg(test)]
mod tests {
    use thrift::protocol::TMessageType;
    use uploader_idl::{TUploaderSyncClient, UploadRequest};

    use super::*;
    use crate::protocols::thrift::testing::{upload_call, written_by_client};

    const MAX: usize = 16_384_000;

    fn complete(flavor: Flavor, buf: &[u8]) -> (usize, MessageHeader) {
        match delimit(flavor, buf, MAX) {
            Ok(Delimit::Complete { len, header }) => (len, header),
            other => panic!("{flavor}: expected a whole message, got {other:?}"),
        }
    }

    #[test]
    fn a_whole_upload_is_exactly_one_message() {
        for flavor in Flavor::ALL {
            let call = upload_call(flavor, vec![7; 100_000]);
            let (len, header) = complete(flavor, &call);
            assert_eq!(len, call.len(), "{flavor}");
            assert_eq!(header.name, "upload");
            assert_eq!(header.kind, TMessageType::Call);
            assert_eq!(header.seqid, 1);
        }
    }

    #[test]
    fn every_prefix_needs_more_and_says_how_much() {
        for flavor in Flavor::ALL {
            let call = upload_call(flavor, vec![1; 3000]);
            for n in 0..call.len() {
                match delimit(flavor, &call[..n], MAX) {
                    Ok(Delimit::NeedMore { at_least }) => {
                        assert!(at_least > n, "{flavor} at {n}: at_least {at_least}");
                        assert!(at_least <= call.len(), "{flavor} at {n}: {at_least}");
                    }
                    other => panic!("{flavor}: prefix of {n} bytes gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_known_binary_length_is_waited_for_in_one_step() {
        // Once the data field's length prefix is in, the lower bound is the
        // end of the data: a 1 MiB buffered upload is not re-walked per read.
        let data_len = 1 << 20;
        for flavor in [Flavor::BUFFERED_BINARY, Flavor::BUFFERED_COMPACT] {
            let call = upload_call(flavor, vec![0xAB; data_len]);
            let data_start = call
                .windows(16)
                .position(|w| w == [0xAB; 16])
                .expect("data in the call");
            match delimit(flavor, &call[..data_start + 10], MAX) {
                Ok(Delimit::NeedMore { at_least }) => {
                    assert_eq!(at_least, data_start + data_len, "{flavor}")
                }
                other => panic!("{flavor}: {other:?}"),
            }
        }
    }

    #[test]
    fn pipelined_messages_come_apart_in_order() {
        for flavor in Flavor::ALL {
            let buf = written_by_client(flavor, |c| {
                let _ = c.ping();
                let _ = c.upload(UploadRequest::new(vec![3; 5000], None, None));
                c.touch("note".into()).expect("oneway");
            });
            let mut rest = &buf[..];
            let mut seen = Vec::new();
            while !rest.is_empty() {
                let (len, header) = complete(flavor, rest);
                seen.push((header.name.to_string(), header.kind, header.seqid));
                rest = &rest[len..];
            }
            assert_eq!(
                seen,
                vec![
                    ("ping".to_string(), TMessageType::Call, 1),
                    ("upload".to_string(), TMessageType::Call, 2),
                    ("touch".to_string(), TMessageType::OneWay, 3),
                ],
                "{flavor}"
            );
        }
    }

    #[test]
    fn replies_and_exceptions_are_delimited_too() {
        for flavor in Flavor::ALL {
            let reply = crate::protocols::thrift::encode_exception(
                flavor,
                "upload",
                4,
                thrift::ApplicationErrorKind::UnknownMethod,
                "nope",
            );
            let (len, header) = complete(flavor, &reply);
            assert_eq!((len, header.kind), (reply.len(), TMessageType::Exception));
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_length() {
        let call = upload_call(Flavor::FRAMED_BINARY, vec![0; 1000]);
        let body = call.len() - 4;
        assert_eq!(
            delimit(Flavor::FRAMED_BINARY, &call[..4], body - 1),
            Err(InvalidThrift::FrameTooLarge {
                len: body as u64,
                max: body - 1
            })
        );
    }

    #[test]
    fn a_buffered_message_that_cannot_end_within_the_limit_is_refused_early() {
        for flavor in [Flavor::BUFFERED_BINARY, Flavor::BUFFERED_COMPACT] {
            let call = upload_call(flavor, vec![5; 10_000]);
            // Only the first 100 bytes: the data's length already says too much.
            match delimit(flavor, &call[..100], 5000) {
                Err(InvalidThrift::FrameTooLarge { len, max: 5000 }) => {
                    assert!(len > 10_000, "{flavor}: {len}")
                }
                other => panic!("{flavor}: {other:?}"),
            }
            // The whole message under a limit that fits is fine.
            assert_eq!(complete(flavor, &call).0, call.len());
        }
    }

    #[test]
    fn a_frame_must_start_with_a_header_in_its_protocol() {
        let mut call = upload_call(Flavor::FRAMED_BINARY, vec![0; 10]);
        // Framed compact bytes read as binary, and garbage after a length.
        assert!(matches!(
            delimit(Flavor::FRAMED_COMPACT, &call, MAX),
            Err(InvalidThrift::BadHeader(_))
        ));
        call[4] = 0x41;
        assert!(matches!(
            delimit(Flavor::FRAMED_BINARY, &call[..8], MAX),
            Err(InvalidThrift::BadHeader(_))
        ));
    }

    #[test]
    fn a_hostile_binary_length_is_never_read_for() {
        // A header, then field 1 (binary) claiming 2,000,000,000 bytes and
        // ten bytes of it. The bound is checked before the crate reads, so
        // nothing of that size is allocated and the caller learns the size.
        let header =
            upload_call(Flavor::BUFFERED_BINARY, vec![])[..4 + 4 + "upload".len() + 4].to_vec();
        let mut msg = header.clone();
        msg.extend_from_slice(&[0x0C, 0, 1]); // field 1: struct UploadRequest
        msg.extend_from_slice(&[0x0B, 0, 1]); // field 1: binary data
        msg.extend_from_slice(&2_000_000_000i32.to_be_bytes());
        let claimed_end = msg.len() + 2_000_000_000;
        msg.extend_from_slice(&[0; 10]);
        assert_eq!(
            delimit(Flavor::BUFFERED_BINARY, &msg, usize::MAX),
            Ok(Delimit::NeedMore {
                at_least: claimed_end
            })
        );
        assert_eq!(
            delimit(Flavor::BUFFERED_BINARY, &msg, MAX),
            Err(InvalidThrift::FrameTooLarge {
                len: claimed_end as u64,
                max: MAX
            })
        );
    }

    #[test]
    fn garbage_after_a_valid_header_is_a_bad_message() {
        let mut msg = upload_call(Flavor::BUFFERED_BINARY, vec![])[..18].to_vec();
        msg.extend_from_slice(&[0x01, 0, 1, 0, 0]); // a Void field
        assert!(matches!(
            delimit(Flavor::BUFFERED_BINARY, &msg, MAX),
            Err(InvalidThrift::BadMessage(_))
        ));
    }

    /// `list<i64>` of `n` elements as field 1 of a buffered call's args,
    /// and the offset where the elements start.
    fn list_call(protocol: Protocol, n: usize) -> (Vec<u8>, usize) {
        use thrift::protocol::{
            TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier, TListIdentifier,
            TMessageIdentifier, TOutputProtocol, TStructIdentifier,
        };
        fn write(o: &mut dyn TOutputProtocol, n: usize, start: &mut dyn FnMut()) {
            o.write_message_begin(&TMessageIdentifier::new("sum", TMessageType::Call, 1))
                .and_then(|()| o.write_struct_begin(&TStructIdentifier::new("args")))
                .and_then(|()| o.write_field_begin(&TFieldIdentifier::new("xs", TType::List, 1)))
                .and_then(|()| o.write_list_begin(&TListIdentifier::new(TType::I64, n as i32)))
                .expect("write");
            start();
            for i in 0..n {
                o.write_i64(i as i64 * 1_000_003).expect("write");
            }
            o.write_list_end()
                .and_then(|()| o.write_field_end())
                .and_then(|()| o.write_field_stop())
                .and_then(|()| o.write_struct_end())
                .and_then(|()| o.write_message_end())
                .expect("write");
        }
        let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut start = 0;
        struct W(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut mark = || start = out.borrow().len();
        match protocol {
            Protocol::Binary => write(
                &mut TBinaryOutputProtocol::new(W(out.clone()), true),
                n,
                &mut mark,
            ),
            Protocol::Compact => write(
                &mut TCompactOutputProtocol::new(W(out.clone())),
                n,
                &mut mark,
            ),
        }
        let bytes = out.borrow().clone();
        (bytes, start)
    }

    #[test]
    fn a_long_list_is_waited_for_in_one_step() {
        let n = 10_000;
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let flavor = Flavor::new(Transport::Buffered, protocol);
            let (call, start) = list_call(protocol, n);
            assert_eq!(complete(flavor, &call).0, call.len());
            let at_least = match delimit(flavor, &call[..start + 3], MAX) {
                Ok(Delimit::NeedMore { at_least }) => at_least,
                other => panic!("{flavor}: {other:?}"),
            };
            match protocol {
                // Fixed width: the whole list, then only the args' stop.
                Protocol::Binary => assert_eq!(at_least, call.len() - 1),
                // Varints: at least a byte per element.
                Protocol::Compact => {
                    assert!(at_least >= start + n && at_least < call.len(), "{at_least}")
                }
            }
            // A count no frame could hold is refused before the elements come.
            let mut huge = call[..start].to_vec();
            huge.extend_from_slice(&[0; 8]);
            let limit = start + 100;
            assert!(
                matches!(
                    delimit(flavor, &huge, limit),
                    Err(InvalidThrift::FrameTooLarge { .. })
                ),
                "{flavor}"
            );
        }
    }
}
