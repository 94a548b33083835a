//! The hand decoder against the `thrift` crate's `read_message_begin` (the
//! oracle, read through the same slice reader probegate used before): same
//! header and end, same bytes needed, same kind of error, on every prefix
//! of many headers and on random bytes.

use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TMessageIdentifier, TMessageType,
    TOutputProtocol,
};

use super::{decode, HeaderError};
use crate::protocols::thrift::wire::{header_config, Position, ReadFailure};
use crate::protocols::thrift::{MessageHeader, Protocol};

/// What the crate makes of `buf`: the header and where it ends, the bytes
/// it needs, or its error text (the crate prints only the error's kind).
fn oracle(
    protocol: Protocol,
    buf: &[u8],
) -> Result<(MessageHeader, usize), (Option<usize>, String)> {
    let position = Position::default();
    let source = position.source(buf, protocol);
    let result = source.with_input(header_config(), |p| p.read_message_begin());
    match result {
        Ok(id) => Ok((MessageHeader::from(id), position.pos())),
        Err(e) => match ReadFailure::from(e) {
            ReadFailure::Eof => Err((Some(position.at_least(buf.len())), String::new())),
            ReadFailure::Bad(text) => Err((None, text)),
        },
    }
}

fn check(protocol: Protocol, buf: &[u8]) {
    let ours = decode(protocol, buf, 0);
    match (oracle(protocol, buf), ours) {
        (Ok(expected), Ok(got)) => assert_eq!(got, expected, "{protocol:?} {buf:02x?}"),
        (Err((Some(wanted), _)), Err(HeaderError::Eof { wanted: got })) => assert_eq!(
            got.max(buf.len() + 1),
            wanted,
            "bytes needed, {protocol:?} {buf:02x?}"
        ),
        (Err((None, kind)), Err(HeaderError::Bad(text))) => assert!(
            text.starts_with(&kind),
            "{protocol:?} {buf:02x?}: {text:?} should start with the crate's {kind:?}"
        ),
        (expected, got) => panic!("{protocol:?} {buf:02x?}: crate {expected:?}, ours {got:?}"),
    }
}

/// A header as the crate's writer encodes it.
fn written(protocol: Protocol, name: &str, kind: TMessageType, seqid: i32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut p: Box<dyn TOutputProtocol + '_> = match protocol {
            Protocol::Binary => Box::new(TBinaryOutputProtocol::new(&mut out, true)),
            Protocol::Compact => Box::new(TCompactOutputProtocol::new(&mut out)),
        };
        p.write_message_begin(&TMessageIdentifier::new(name, kind, seqid))
            .expect("encode");
        p.flush().expect("flush");
    }
    out
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Binary, Protocol::Compact];

#[test]
fn every_prefix_of_real_headers_decodes_like_the_crate() {
    let long_ok = "m".repeat(256);
    let too_long = "m".repeat(257);
    let names = [
        "",
        "ping",
        "upload",
        "é✓",
        long_ok.as_str(),
        too_long.as_str(),
    ];
    let kinds = [
        TMessageType::Call,
        TMessageType::Reply,
        TMessageType::Exception,
        TMessageType::OneWay,
    ];
    let seqids = [0, 1, -1, 127, 128, 16_384, i32::MAX, i32::MIN];
    for protocol in PROTOCOLS {
        for name in names {
            for kind in kinds {
                for seqid in seqids {
                    let mut bytes = written(protocol, name, kind, seqid);
                    bytes.extend_from_slice(b"\x00rest of the message");
                    for end in 0..=bytes.len() {
                        check(protocol, &bytes[..end]);
                    }
                }
            }
        }
    }
}

#[test]
fn damaged_headers_are_refused_like_the_crate() {
    for protocol in PROTOCOLS {
        let good = written(protocol, "ping", TMessageType::Call, 7);
        // Every byte of a good header replaced by a few telling values.
        for i in 0..good.len() {
            for value in [0x00, 0x01, 0x05, 0x7F, 0x80, 0x81, 0x82, 0xC1, 0xE5, 0xFF] {
                let mut bad = good.clone();
                bad[i] = value;
                check(protocol, &bad);
            }
        }
    }
    // Names that are not UTF-8, a negative binary length, long varints.
    check(
        Protocol::Binary,
        b"\x80\x01\x00\x01\x00\x00\x00\x02\xff\xfe\x00\x00\x00\x01",
    );
    check(Protocol::Binary, b"\x80\x01\x00\x01\xff\xff\xff\xfe");
    check(Protocol::Compact, b"\x82\x21\x01\x02\xc3\x28");
    check(Protocol::Compact, b"\x82\x21\xff\xff\xff\xff\xff\x01");
    check(Protocol::Compact, b"\x82\x21\xff\xff\xff\xff\x7f\x00");
    check(Protocol::Compact, b"\x82\x21\x01\xff\xff\xff\xff\x0f");
}

#[test]
fn random_bytes_are_judged_like_the_crate() {
    // xorshift: deterministic, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for protocol in PROTOCOLS {
        let lead: &[u8] = match protocol {
            Protocol::Binary => &[0x80, 0x01],
            Protocol::Compact => &[0x82],
        };
        for case in 0..20_000 {
            let len = (next() % 24) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Most cases start like a header, so that they get past the
            // first checks.
            if case % 4 != 0 {
                let n = lead.len().min(bytes.len());
                bytes[..n].copy_from_slice(&lead[..n]);
            }
            check(protocol, &bytes);
        }
    }
}

#[test]
fn a_header_ends_where_the_body_starts() {
    let bytes = written(Protocol::Compact, "upload", TMessageType::Call, 300);
    let (header, end) = decode(Protocol::Compact, &[b"xx".as_slice(), &bytes].concat(), 2)
        .expect("decodes at an offset");
    assert_eq!(header.name, "upload");
    assert_eq!(header.seqid, 300);
    assert_eq!(end, 2 + bytes.len());
}
