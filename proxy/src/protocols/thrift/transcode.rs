//! Re-encoding a message for a peer that speaks another flavor.
//!
//! Lets a compact (or buffered) client use a binary (or framed) backend and
//! back: the message is read with the source protocol's reader and every
//! value written with the target protocol's writer, walking the body
//! generically by type (struct, list, set, map, primitives), so no IDL is
//! needed. The header (name, kind, seqid) is kept; the frame prefix is added
//! or removed as the transports require.

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
    let mut out: Vec<u8> = Vec::with_capacity(body.len() + 4);
    if framed {
        out.extend_from_slice(&[0; 4]);
    }

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
            &mut TBinaryOutputProtocol::new(&mut out, true),
            max_frame_bytes,
        ),
        Protocol::Compact => copy(
            &src,
            &id,
            &mut TCompactOutputProtocol::new(&mut out),
            max_frame_bytes,
        ),
    };
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

    let produced = out.len() - if framed { 4 } else { 0 };
    if produced > max_frame_bytes {
        return Err(InvalidThrift::FrameTooLarge {
            len: produced as u64,
            max: max_frame_bytes,
        });
    }
    if framed {
        // produced <= max_frame_bytes, which the frame check kept within u32.
        let len = u32::try_from(produced).map_err(|_| InvalidThrift::FrameTooLarge {
            len: produced as u64,
            max: max_frame_bytes,
        })?;
        out[..4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(out)
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
    max: usize,
) -> Result<(), ReadFailure> {
    out.write_message_begin(header)?;
    src.with_input(body_config(max), |input| {
        walk(src, input, Some(&mut *out), TType::Struct, 0)?;
        input.read_message_end().map_err(ReadFailure::from)
    })?;
    out.write_message_end()?;
    out.flush().map_err(ReadFailure::from)
}
