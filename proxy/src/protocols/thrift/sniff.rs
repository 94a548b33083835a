//! Recognising Thrift in the first bytes of a client connection.
//!
//! The dispatch on the first bytes (DESIGN.md, "First bytes"): `80 01` is
//! unframed strict binary, `82` unframed compact; anything else is read as a
//! 4-byte big-endian frame length, which must be within
//! `limits.max_frame_bytes` and be followed by `80 01` or `82` (`0F FF` there
//! is THeader). The header itself is then decoded (`header.rs`, the
//! `thrift` crate's rules). A
//! client may only send calls (`Call` or `Oneway`).
//!
//! Every answer is decided from a bounded prefix (a length, or a header whose
//! name is at most [`MAX_NAME_BYTES`]), so garbage can never make the caller
//! wait for, or allocate, more than a few hundred bytes.

use super::wire::{Position, ReadFailure, MAX_NAME_BYTES};
use super::{Flavor, InvalidThrift, MessageHeader, Protocol, Transport};

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough bytes to tell yet; read more (within `timeouts.first_byte`).
    NeedMore,
    /// A Thrift call in the given flavor, with its decoded header.
    Thrift {
        flavor: Flavor,
        header: MessageHeader,
    },
    /// Not something probegate forwards; close the connection.
    Invalid(InvalidThrift),
}

/// Recognise the first bytes of a connection, decoding the message header
/// by the rules of the `thrift` crate's binary (strict) and compact readers.
pub fn sniff(buf: &[u8], max_frame_bytes: usize) -> Sniff {
    match buf {
        [] | [0x80] => Sniff::NeedMore,
        [0x80, 0x01, ..] => unframed(buf, Protocol::Binary),
        [0x82, ..] => unframed(buf, Protocol::Compact),
        _ => framed(buf, max_frame_bytes),
    }
}

fn unframed(buf: &[u8], protocol: Protocol) -> Sniff {
    let flavor = Flavor::new(Transport::Buffered, protocol);
    let position = Position::default();
    match position.source(buf, protocol).read_header() {
        Ok(header) => accept(flavor, header),
        Err(ReadFailure::Eof) => Sniff::NeedMore,
        Err(ReadFailure::Bad(why)) => Sniff::Invalid(InvalidThrift::BadHeader(why)),
    }
}

fn framed(buf: &[u8], max_frame_bytes: usize) -> Sniff {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Sniff::NeedMore;
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    if u64::from(len) > max_frame_bytes as u64 {
        return Sniff::Invalid(InvalidThrift::FrameTooLarge {
            len: u64::from(len),
            max: max_frame_bytes,
        });
    }
    let frame_end = 4usize.saturating_add(len as usize);
    match buf[4..] {
        [] => Sniff::NeedMore,
        [0x80, ..] => framed_header(buf, frame_end, Protocol::Binary),
        [0x82, ..] => framed_header(buf, frame_end, Protocol::Compact),
        [0x0F] => Sniff::NeedMore,
        [0x0F, 0xFF, ..] => Sniff::Invalid(InvalidThrift::THeader),
        _ => match non_strict_either_way(buf, len as usize) {
            None => Sniff::NeedMore,
            Some(true) => Sniff::Invalid(InvalidThrift::NonStrictBinary),
            Some(false) => Sniff::Invalid(InvalidThrift::BadHeader(format!(
                "first bytes {:02x?} are neither a Thrift header nor a frame length followed by one",
                &buf[..buf.len().min(8)]
            ))),
        },
    }
}

fn framed_header(buf: &[u8], frame_end: usize, protocol: Protocol) -> Sniff {
    let flavor = Flavor::new(Transport::Framed, protocol);
    let frame = &buf[4..buf.len().min(frame_end)];
    let position = Position::default();
    match position.source(frame, protocol).read_header() {
        Ok(header) => accept(flavor, header),
        Err(ReadFailure::Eof) if buf.len() < frame_end => Sniff::NeedMore,
        Err(ReadFailure::Eof) => Sniff::Invalid(InvalidThrift::BadHeader(format!(
            "a frame of {} bytes ends inside its message header",
            frame_end - 4
        ))),
        Err(ReadFailure::Bad(why)) => Sniff::Invalid(InvalidThrift::BadHeader(why)),
    }
}

/// Whether the bytes are an unversioned binary call, unframed (the first 4
/// bytes are the name length) or framed (the name length follows the frame
/// length). `None` while either reading still needs bytes.
fn non_strict_either_way(buf: &[u8], first_word: usize) -> Option<bool> {
    let unframed = looks_non_strict(buf, first_word);
    if unframed == Some(true) {
        return unframed;
    }
    // A framed call holds at least a name length, a name, a type and a seqid.
    let framed = match buf.get(4..8) {
        _ if first_word < 10 => Some(false),
        Some(&[a, b, c, d]) => {
            looks_non_strict(&buf[4..], u32::from_be_bytes([a, b, c, d]) as usize)
        }
        _ => None,
    };
    match (unframed, framed) {
        (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// Whether the bytes read like an unversioned binary header: a short name
/// length, that many printable bytes, then a message type. `None` until the
/// name and type byte are all here (at most [`MAX_NAME_BYTES`] + 5 bytes).
fn looks_non_strict(buf: &[u8], name_len: usize) -> Option<bool> {
    if name_len == 0 || name_len > MAX_NAME_BYTES {
        return Some(false);
    }
    let name = &buf[4..buf.len().min(4 + name_len)];
    if !name.iter().all(u8::is_ascii_graphic) {
        return Some(false);
    }
    let kind = *buf.get(4 + name_len)?;
    Some((1..=4).contains(&kind))
}

/// A client may only call.
fn accept(flavor: Flavor, header: MessageHeader) -> Sniff {
    if header.is_call() {
        Sniff::Thrift { flavor, header }
    } else {
        Sniff::Invalid(InvalidThrift::BadHeader(format!(
            "a client sent a {:?} message ({:?}, seqid {})",
            header.kind, header.name, header.seqid
        )))
    }
}

#[cfg(test)]
mod tests {
    use thrift::protocol::{
        TBinaryOutputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier,
    };
    use uploader_idl::TUploaderSyncClient;

    use super::*;
    use crate::protocols::thrift::testing::written_by_client;

    const MAX: usize = 16_384_000;

    /// What a row expects: the variant, and for Thrift the flavor and header.
    #[derive(Debug)]
    enum Want {
        NeedMore,
        Thrift(Flavor, &'static str, TMessageType, i32),
        Invalid(InvalidThrift),
        /// Any `BadHeader`, whatever its explanation.
        BadHeader,
    }

    fn ping(flavor: Flavor) -> Vec<u8> {
        written_by_client(flavor, |c| {
            let _ = c.ping();
        })
    }

    fn touch(flavor: Flavor) -> Vec<u8> {
        written_by_client(flavor, |c| {
            c.touch("hello".into()).expect("oneway call writes only");
        })
    }

    /// A message with an arbitrary kind, as a strict or non-strict binary
    /// writer produces it (unframed).
    fn binary_message(strict: bool, name: &str, kind: TMessageType) -> Vec<u8> {
        let mut out = Vec::new();
        let mut p = TBinaryOutputProtocol::new(&mut out, strict);
        p.write_message_begin(&TMessageIdentifier::new(name, kind, 9))
            .and_then(|()| p.write_struct_begin(&TStructIdentifier::new("args")))
            .and_then(|()| p.write_field_stop())
            .and_then(|()| p.write_struct_end())
            .and_then(|()| p.write_message_end())
            .expect("writing to a Vec");
        out
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn first_bytes_table() {
        let nonstrict = binary_message(false, "ping", TMessageType::Call);
        let strict_ping = ping(Flavor::BUFFERED_BINARY);
        let framed_compact = ping(Flavor::FRAMED_COMPACT);
        let name_too_long = cat(&[&[0x80, 0x01, 0x00, 0x01], &1_000_000u32.to_be_bytes()]);
        let rows: Vec<(&str, Vec<u8>, Want)> = vec![
            ("empty", vec![], Want::NeedMore),
            ("lone 80", vec![0x80], Want::NeedMore),
            (
                "strict binary",
                strict_ping.clone(),
                Want::Thrift(Flavor::BUFFERED_BINARY, "ping", TMessageType::Call, 1),
            ),
            (
                "compact",
                ping(Flavor::BUFFERED_COMPACT),
                Want::Thrift(Flavor::BUFFERED_COMPACT, "ping", TMessageType::Call, 1),
            ),
            (
                "framed binary",
                ping(Flavor::FRAMED_BINARY),
                Want::Thrift(Flavor::FRAMED_BINARY, "ping", TMessageType::Call, 1),
            ),
            (
                "framed compact",
                framed_compact.clone(),
                Want::Thrift(Flavor::FRAMED_COMPACT, "ping", TMessageType::Call, 1),
            ),
            (
                "oneway framed binary",
                touch(Flavor::FRAMED_BINARY),
                Want::Thrift(Flavor::FRAMED_BINARY, "touch", TMessageType::OneWay, 1),
            ),
            (
                "oneway compact",
                touch(Flavor::BUFFERED_COMPACT),
                Want::Thrift(Flavor::BUFFERED_COMPACT, "touch", TMessageType::OneWay, 1),
            ),
            (
                "truncated strict header",
                strict_ping[..9].to_vec(),
                Want::NeedMore,
            ),
            (
                "truncated framed header",
                framed_compact[..6].to_vec(),
                Want::NeedMore,
            ),
            ("frame length only", vec![0, 0, 0, 20], Want::NeedMore),
            (
                "HTTP",
                b"GET /health HTTP/1.1\r\n".to_vec(),
                Want::Invalid(InvalidThrift::FrameTooLarge {
                    len: 1_195_725_856,
                    max: MAX,
                }),
            ),
            (
                "TLS ClientHello",
                vec![
                    0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
                ],
                Want::Invalid(InvalidThrift::FrameTooLarge {
                    len: 0x1603_0100,
                    max: MAX,
                }),
            ),
            (
                "SSH banner",
                b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
                Want::Invalid(InvalidThrift::FrameTooLarge {
                    len: 0x5353_482d,
                    max: MAX,
                }),
            ),
            (
                "2 GB frame, decided from 4 bytes",
                vec![0x80, 0x00, 0x00, 0x00],
                Want::Invalid(InvalidThrift::FrameTooLarge {
                    len: 1 << 31,
                    max: MAX,
                }),
            ),
            (
                "one byte over the limit",
                cat(&[&(MAX as u32 + 1).to_be_bytes(), &[0x80, 0x01]]),
                Want::Invalid(InvalidThrift::FrameTooLarge {
                    len: MAX as u64 + 1,
                    max: MAX,
                }),
            ),
            (
                "THeader",
                vec![0x00, 0x00, 0x00, 0x20, 0x0F, 0xFF, 0x00, 0x00],
                Want::Invalid(InvalidThrift::THeader),
            ),
            (
                "THeader, one byte short",
                vec![0, 0, 0, 0x20, 0x0F],
                Want::NeedMore,
            ),
            (
                "non-strict binary",
                nonstrict.clone(),
                Want::Invalid(InvalidThrift::NonStrictBinary),
            ),
            (
                "framed non-strict binary",
                {
                    let mut framed = (nonstrict.len() as u32).to_be_bytes().to_vec();
                    framed.extend_from_slice(&nonstrict);
                    framed
                },
                Want::Invalid(InvalidThrift::NonStrictBinary),
            ),
            (
                "non-strict binary, name cut",
                nonstrict[..6].to_vec(),
                Want::NeedMore,
            ),
            (
                "printable after a small length, no message type",
                b"\x00\x00\x00\x04ping\x09".to_vec(),
                Want::BadHeader,
            ),
            (
                "zero length then text",
                b"\x00\x00\x00\x00abc".to_vec(),
                Want::BadHeader,
            ),
            (
                "a reply from a client",
                binary_message(true, "ping", TMessageType::Reply),
                Want::BadHeader,
            ),
            (
                "an exception from a client",
                binary_message(true, "ping", TMessageType::Exception),
                Want::BadHeader,
            ),
            (
                "compact, bad version",
                vec![0x82, 0x00, 0x01, 0x00],
                Want::BadHeader,
            ),
            (
                "binary, bad message type",
                vec![0x80, 0x01, 0x00, 0x07],
                Want::BadHeader,
            ),
            (
                "name length too long to wait for",
                name_too_long,
                Want::BadHeader,
            ),
            (
                "name not UTF-8",
                cat(&[
                    &[0x80, 0x01, 0x00, 0x01, 0, 0, 0, 2, 0xFF, 0xFE],
                    &[0, 0, 0, 1],
                ]),
                Want::BadHeader,
            ),
            (
                "frame shorter than its header",
                cat(&[&[0, 0, 0, 6], &strict_ping[..6], &[0x80, 0x01]]),
                Want::BadHeader,
            ),
        ];
        for (what, bytes, want) in rows {
            let got = sniff(&bytes, MAX);
            let ok = match (&want, &got) {
                (Want::NeedMore, Sniff::NeedMore) => true,
                (Want::Thrift(f, name, kind, seqid), Sniff::Thrift { flavor, header }) => {
                    f == flavor
                        && header.name == *name
                        && header.kind == *kind
                        && header.seqid == *seqid
                }
                (Want::Invalid(w), Sniff::Invalid(g)) => w == g,
                (Want::BadHeader, Sniff::Invalid(InvalidThrift::BadHeader(_))) => true,
                _ => false,
            };
            assert!(ok, "{what}: {bytes:02x?}\n want {want:?}\n  got {got:?}");
        }
    }

    #[test]
    fn every_prefix_of_a_call_needs_more_until_the_header_is_in() {
        for flavor in Flavor::ALL {
            let call = ping(flavor);
            let mut recognised_at = None;
            for n in 0..=call.len() {
                match sniff(&call[..n], MAX) {
                    Sniff::NeedMore => assert!(recognised_at.is_none(), "{flavor} at {n}"),
                    Sniff::Thrift { flavor: f, .. } => {
                        assert_eq!(f, flavor);
                        recognised_at.get_or_insert(n);
                    }
                    Sniff::Invalid(e) => panic!("{flavor}: prefix of {n} bytes rejected: {e}"),
                }
            }
            assert!(recognised_at.is_some(), "{flavor} never recognised");
        }
    }

    #[test]
    fn the_frame_limit_is_the_configured_one() {
        let call = ping(Flavor::FRAMED_BINARY);
        let body = call.len() - 4;
        assert!(matches!(sniff(&call, body), Sniff::Thrift { .. }));
        assert_eq!(
            sniff(&call, body - 1),
            Sniff::Invalid(InvalidThrift::FrameTooLarge {
                len: body as u64,
                max: body - 1
            })
        );
    }

    #[test]
    fn reasons_are_the_metric_labels() {
        let cases = [
            (
                InvalidThrift::FrameTooLarge { len: 1, max: 0 },
                "frame_too_large",
            ),
            (InvalidThrift::NonStrictBinary, "non_strict_binary"),
            (InvalidThrift::THeader, "theader"),
            (InvalidThrift::BadHeader("x".into()), "bad_thrift"),
            (InvalidThrift::BadMessage("x".into()), "bad_thrift"),
        ];
        for (e, reason) in cases {
            assert_eq!(e.reason(), reason, "{e}");
        }
    }
}
