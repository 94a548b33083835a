//! What sniff, delimit and transcode share: reading a byte slice through the
//! `thrift` crate's protocols while still seeing how far they got.
//!
//! The crate's protocols own their transport, so a plain `Cursor` cannot be
//! asked for its position mid-message. [`SliceReader`] keeps its position
//! (and the furthest byte any read asked for) in `Cell`s the caller holds,
//! which gives delimit both the end of a message and a useful "need at least
//! N bytes" when the buffer runs out.
//!
//! [`walk`] visits one value of any type with the crate's readers, optionally
//! writing it to an output protocol (transcode) or just skipping it
//! (delimit). It stands in for `TInputProtocol::skip` for two reasons: before
//! a string/binary is read, its length is checked against the bytes actually
//! present (so a hostile length never allocates more than was received, and
//! delimit learns exactly how many bytes the message still needs), and every
//! type is validated before it reaches an output protocol (the crate's
//! compact writer panics on types it cannot encode).

use std::cell::Cell;
use std::io::{self, Read};

use thrift::protocol::{
    TBinaryInputProtocol, TCompactInputProtocol, TFieldIdentifier, TInputProtocol, TMapIdentifier,
    TOutputProtocol, TStructIdentifier, TType,
};
use thrift::{TConfiguration, TransportErrorKind};

use super::header::HeaderError;
use super::{MessageHeader, Protocol};

/// Longest method name accepted in a message header. Real names are a few
/// dozen bytes; the bound keeps garbage from making us wait for megabytes.
pub(crate) const MAX_NAME_BYTES: usize = 256;

/// Deepest nesting of structs and containers walked (the crate's own default).
const MAX_DEPTH: usize = 64;

/// Why a read stopped.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The bytes ran out; the reader's `wanted` cell says how many were asked for.
    Eof,
    /// The bytes are not valid for the protocol.
    Bad(String),
}

impl From<thrift::Error> for ReadFailure {
    fn from(e: thrift::Error) -> Self {
        match e {
            thrift::Error::Transport(t) if t.kind == TransportErrorKind::EndOfFile => {
                ReadFailure::Eof
            }
            other => ReadFailure::Bad(other.to_string()),
        }
    }
}

/// A byte slice being read, with its position visible from outside the
/// protocol that reads it.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub buf: &'a [u8],
    pub protocol: Protocol,
    /// Next byte to read.
    pos: &'a Cell<usize>,
    /// One past the furthest byte any read has asked for so far.
    wanted: &'a Cell<usize>,
}

/// The state a [`Source`] points to; lives on the caller's stack.
#[derive(Default)]
pub(crate) struct Position {
    pos: Cell<usize>,
    wanted: Cell<usize>,
}

impl Position {
    pub fn source<'a>(&'a self, buf: &'a [u8], protocol: Protocol) -> Source<'a> {
        Source {
            buf,
            protocol,
            pos: &self.pos,
            wanted: &self.wanted,
        }
    }
    pub fn pos(&self) -> usize {
        self.pos.get()
    }
    /// A lower bound on the buffer length at which reading can go further.
    pub fn at_least(&self, buf_len: usize) -> usize {
        self.wanted.get().max(buf_len.saturating_add(1))
    }
}

/// The `Read` a protocol owns; it moves the shared position.
pub(crate) struct SliceReader<'a>(Source<'a>);

impl Read for SliceReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let s = &self.0;
        let start = s.pos.get().min(s.buf.len());
        let available = &s.buf[start..];
        if out.len() > available.len() {
            s.wanted
                .set(s.wanted.get().max(start.saturating_add(out.len())));
        }
        let n = out.len().min(available.len());
        out[..n].copy_from_slice(&available[..n]);
        s.pos.set(start + n);
        Ok(n)
    }
}

impl<'a> Source<'a> {
    fn reader(&self) -> SliceReader<'a> {
        SliceReader(*self)
    }

    /// Runs `f` with this source's protocol reading from the current position.
    pub fn with_input<R>(
        &self,
        config: TConfiguration,
        f: impl FnOnce(&mut dyn TInputProtocol) -> R,
    ) -> R {
        match self.protocol {
            Protocol::Binary => f(&mut TBinaryInputProtocol::with_config(
                self.reader(),
                true,
                config,
            )),
            Protocol::Compact => f(&mut TCompactInputProtocol::with_config(
                self.reader(),
                config,
            )),
        }
    }

    /// Decodes a message header (strict binary or compact) at the current
    /// position, refusing names longer than [`MAX_NAME_BYTES`] (by hand:
    /// see `header.rs`).
    pub fn read_header(&self) -> Result<MessageHeader, ReadFailure> {
        match super::header::decode(self.protocol, self.buf, self.pos.get()) {
            Ok((header, end)) => {
                self.pos.set(end);
                Ok(header)
            }
            Err(HeaderError::Eof { wanted }) => {
                self.wanted.set(self.wanted.get().max(wanted));
                Err(ReadFailure::Eof)
            }
            Err(HeaderError::Bad(why)) => Err(ReadFailure::Bad(why)),
        }
    }

    /// Before the crate reads a string/binary at the current position: if its
    /// length prefix is already here and the bytes it announces are not, stop
    /// with `Eof` (recording how many bytes are needed) instead of letting the
    /// reader allocate for them. A prefix that is itself incomplete or invalid
    /// is left for the crate to report.
    fn check_binary_present(&self) -> Result<(), ReadFailure> {
        let pos = self.pos.get();
        let rest = self.buf.get(pos..).unwrap_or_default();
        let announced = match self.protocol {
            // Same layout as the crate's read_binary_len: i32 big-endian.
            Protocol::Binary => match rest.get(..4) {
                Some(b) => usize::try_from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok()
                    .map(|len| (4, len)),
                None => None,
            },
            // Same layout as the crate's read_varint32: unsigned LEB128.
            Protocol::Compact => varint32(rest).map(|(used, len)| (used, len as usize)),
        };
        if let Some((prefix, len)) = announced {
            let end = pos.saturating_add(prefix).saturating_add(len);
            if end > self.buf.len() {
                self.wanted.set(self.wanted.get().max(end));
                return Err(ReadFailure::Eof);
            }
        }
        Ok(())
    }
}

impl Source<'_> {
    /// Before a container's elements are read: `count` elements, each made of
    /// values of `types`, need at least `count * min_width` bytes. When fewer
    /// are here, stop with `Eof` recording that bound, so that delimit's
    /// caller waits for a whole list at once instead of re-walking it per
    /// read (and a hostile count is refused by the frame cap at once).
    fn check_elements_present(&self, count: i32, types: &[TType]) -> Result<(), ReadFailure> {
        let per_element: usize = types.iter().map(|t| min_width(self.protocol, *t)).sum();
        let count = usize::try_from(count).unwrap_or(0);
        let end = self
            .pos
            .get()
            .saturating_add(count.saturating_mul(per_element));
        if end > self.buf.len() {
            self.wanted.set(self.wanted.get().max(end));
            return Err(ReadFailure::Eof);
        }
        Ok(())
    }
}

/// The fewest bytes a value of type `ty` takes in `protocol` (inside a
/// container, where a compact bool is one byte).
fn min_width(protocol: Protocol, ty: TType) -> usize {
    match (protocol, ty) {
        (_, TType::Bool | TType::I08) => 1,
        (_, TType::Double) => 8,
        (_, TType::Uuid) => 16,
        (Protocol::Binary, TType::I16) => 2,
        (Protocol::Binary, TType::I32 | TType::String) => 4,
        (Protocol::Binary, TType::I64) => 8,
        // element type + i32 count; key type + value type + i32 count
        (Protocol::Binary, TType::List | TType::Set) => 5,
        (Protocol::Binary, TType::Map) => 6,
        // varints, a one-byte stop, a one-byte container header
        _ => 1,
    }
}

/// Decodes an unsigned LEB128 varint of at most 5 bytes: (bytes used, value).
fn varint32(bytes: &[u8]) -> Option<(usize, u32)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value).ok().map(|v| (i + 1, v));
        }
    }
    None
}

/// Protocol limits for a message header: names are short. Only the header
/// tests use it now, to run the crate's reader as the oracle.
#[cfg(test)]
pub(crate) fn header_config() -> TConfiguration {
    config(MAX_NAME_BYTES)
}

/// Protocol limits for a message body: nothing may exceed the frame cap.
pub(crate) fn body_config(max_frame_bytes: usize) -> TConfiguration {
    config(max_frame_bytes)
}

fn config(max_bytes: usize) -> TConfiguration {
    // `max_frame_size` is left unset so that `build` has nothing to reject.
    // The message size is bounded by the caller's frame cap and container
    // counts by `check_elements_present`, which (unlike the crate's check)
    // tells delimit how many bytes a container needs.
    TConfiguration::builder()
        .max_frame_size(None)
        .max_message_size(None)
        .max_string_size(Some(max_bytes))
        .max_recursion_depth(Some(MAX_DEPTH))
        .max_container_size(None)
        .build()
        .unwrap_or_default()
}

/// Types a value can have on the wire (everything both writers can encode).
fn is_value_type(ty: TType) -> bool {
    matches!(
        ty,
        TType::Bool
            | TType::I08
            | TType::I16
            | TType::I32
            | TType::I64
            | TType::Double
            | TType::String
            | TType::Struct
            | TType::Map
            | TType::Set
            | TType::List
            | TType::Uuid
    )
}

fn check_type(ty: TType) -> Result<(), ReadFailure> {
    if is_value_type(ty) {
        Ok(())
    } else {
        Err(ReadFailure::Bad(format!("{ty} is not a value type")))
    }
}

/// A shorter-lived copy of the optional output, for one nested call.
fn reborrow<'b>(
    out: &'b mut Option<&mut dyn TOutputProtocol>,
) -> Option<&'b mut dyn TOutputProtocol> {
    match out {
        Some(o) => Some(&mut **o),
        None => None,
    }
}

/// Reads one value of type `ty` from `input` and, when `out` is given,
/// writes the same value to it. `src` must be the source `input` reads from;
/// `compact_out` says that `out` is a compact writer (see the field ids).
pub(crate) fn walk(
    src: &Source<'_>,
    input: &mut dyn TInputProtocol,
    mut out: Option<&mut dyn TOutputProtocol>,
    compact_out: bool,
    ty: TType,
    depth: usize,
) -> Result<(), ReadFailure> {
    if depth > MAX_DEPTH {
        return Err(ReadFailure::Bad(format!(
            "values nested deeper than {MAX_DEPTH}"
        )));
    }
    macro_rules! copy {
        ($read:ident, $write:ident) => {{
            let v = input.$read()?;
            if let Some(o) = out {
                o.$write(v)?;
            }
        }};
    }
    match ty {
        TType::Bool => copy!(read_bool, write_bool),
        TType::I08 => copy!(read_i8, write_i8),
        TType::I16 => copy!(read_i16, write_i16),
        TType::I32 => copy!(read_i32, write_i32),
        TType::I64 => copy!(read_i64, write_i64),
        TType::Double => copy!(read_double, write_double),
        TType::Uuid => {
            let v = input.read_uuid()?;
            if let Some(o) = out {
                o.write_uuid(&v)?;
            }
        }
        TType::String => {
            src.check_binary_present()?;
            match out {
                Some(o) => o.write_bytes(&input.read_bytes()?)?,
                None => input.skip_binary()?,
            }
        }
        TType::Struct => {
            input.read_struct_begin()?;
            if let Some(o) = reborrow(&mut out) {
                o.write_struct_begin(&TStructIdentifier::new(""))?;
            }
            // The compact writer encodes field ids as deltas with plain i16
            // arithmetic (a panic, or in release a wrong encoding, on
            // overflow); refuse the jumps it cannot take. Real IDLs number
            // their fields in a small range.
            let mut last_id: i16 = 0;
            loop {
                let field = input.read_field_begin()?;
                if field.field_type == TType::Stop {
                    break;
                }
                check_type(field.field_type)?;
                let id = field
                    .id
                    .ok_or_else(|| ReadFailure::Bad("field without an id".into()))?;
                if compact_out && id.checked_sub(last_id).is_none() {
                    return Err(ReadFailure::Bad(format!(
                        "field id {id} after {last_id} cannot be re-encoded"
                    )));
                }
                last_id = id;
                if let Some(o) = reborrow(&mut out) {
                    o.write_field_begin(&TFieldIdentifier::new::<Option<String>, String, i16>(
                        None,
                        field.field_type,
                        id,
                    ))?;
                }
                walk(
                    src,
                    input,
                    reborrow(&mut out),
                    compact_out,
                    field.field_type,
                    depth + 1,
                )?;
                input.read_field_end()?;
                if let Some(o) = reborrow(&mut out) {
                    o.write_field_end()?;
                }
            }
            input.read_struct_end()?;
            if let Some(o) = out {
                o.write_field_stop()?;
                o.write_struct_end()?;
            }
        }
        TType::List => {
            let list = input.read_list_begin()?;
            check_type(list.element_type)?;
            src.check_elements_present(list.size, &[list.element_type])?;
            if let Some(o) = reborrow(&mut out) {
                o.write_list_begin(&list)?;
            }
            for _ in 0..list.size {
                walk(
                    src,
                    input,
                    reborrow(&mut out),
                    compact_out,
                    list.element_type,
                    depth + 1,
                )?;
            }
            input.read_list_end()?;
            if let Some(o) = out {
                o.write_list_end()?;
            }
        }
        TType::Set => {
            let set = input.read_set_begin()?;
            check_type(set.element_type)?;
            src.check_elements_present(set.size, &[set.element_type])?;
            if let Some(o) = reborrow(&mut out) {
                o.write_set_begin(&set)?;
            }
            for _ in 0..set.size {
                walk(
                    src,
                    input,
                    reborrow(&mut out),
                    compact_out,
                    set.element_type,
                    depth + 1,
                )?;
            }
            input.read_set_end()?;
            if let Some(o) = out {
                o.write_set_end()?;
            }
        }
        TType::Map => {
            let map = input.read_map_begin()?;
            // An empty compact map carries no types; the binary writer needs
            // some, and Stop is what other Thrift libraries use there. (Both
            // writers accept any type for an empty map.)
            let (key, value) = if map.size == 0 {
                (
                    map.key_type.unwrap_or(TType::Stop),
                    map.value_type.unwrap_or(TType::Stop),
                )
            } else {
                let (Some(k), Some(v)) = (map.key_type, map.value_type) else {
                    return Err(ReadFailure::Bad("map without element types".into()));
                };
                check_type(k)?;
                check_type(v)?;
                (k, v)
            };
            src.check_elements_present(map.size, &[key, value])?;
            if let Some(o) = reborrow(&mut out) {
                o.write_map_begin(&TMapIdentifier::new(key, value, map.size))?;
            }
            for _ in 0..map.size {
                walk(src, input, reborrow(&mut out), compact_out, key, depth + 1)?;
                walk(
                    src,
                    input,
                    reborrow(&mut out),
                    compact_out,
                    value,
                    depth + 1,
                )?;
            }
            input.read_map_end()?;
            if let Some(o) = out {
                o.write_map_end()?;
            }
        }
        other => {
            return Err(ReadFailure::Bad(format!(
                "cannot read a value of type {other}"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_matches_leb128() {
        assert_eq!(varint32(&[0x05]), Some((1, 5)));
        assert_eq!(varint32(&[0x80, 0x01]), Some((2, 128)));
        assert_eq!(
            varint32(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            Some((5, u32::MAX))
        );
        assert_eq!(varint32(&[0x80]), None, "incomplete");
        assert_eq!(
            varint32(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            None,
            "overflows u32"
        );
    }

    fn write_smallest(o: &mut dyn TOutputProtocol, ty: TType) -> thrift::Result<()> {
        use thrift::protocol::{TListIdentifier, TSetIdentifier};
        match ty {
            TType::Bool => o.write_bool(false),
            TType::I08 => o.write_i8(0),
            TType::I16 => o.write_i16(0),
            TType::I32 => o.write_i32(0),
            TType::I64 => o.write_i64(0),
            TType::Double => o.write_double(0.0),
            TType::String => o.write_bytes(&[]),
            TType::Struct => o.write_field_stop(),
            TType::List => o.write_list_begin(&TListIdentifier::new(TType::I08, 0)),
            TType::Set => o.write_set_begin(&TSetIdentifier::new(TType::I08, 0)),
            TType::Map => o.write_map_begin(&TMapIdentifier::new(TType::I08, TType::I08, 0)),
            other => panic!("no smallest value for {other}"),
        }
    }

    #[test]
    fn minimum_widths_match_what_the_writers_produce() {
        use thrift::protocol::{TBinaryOutputProtocol, TCompactOutputProtocol};
        for protocol in [Protocol::Binary, Protocol::Compact] {
            for ty in [
                TType::Bool,
                TType::I08,
                TType::I16,
                TType::I32,
                TType::I64,
                TType::Double,
                TType::String,
                TType::Struct,
                TType::List,
                TType::Set,
                TType::Map,
            ] {
                let mut out = Vec::new();
                match protocol {
                    Protocol::Binary => {
                        write_smallest(&mut TBinaryOutputProtocol::new(&mut out, true), ty)
                    }
                    Protocol::Compact => {
                        write_smallest(&mut TCompactOutputProtocol::new(&mut out), ty)
                    }
                }
                .expect("write");
                assert_eq!(min_width(protocol, ty), out.len(), "{protocol:?} {ty}");
            }
        }
    }

    #[test]
    fn reader_records_how_far_reads_wanted_to_go() {
        let position = Position::default();
        let src = position.source(&[1, 2, 3], Protocol::Binary);
        let mut r = src.reader();
        let mut out = [0u8; 8];
        assert!(r.read_exact(&mut out).is_err());
        assert_eq!(position.pos(), 3);
        assert_eq!(position.at_least(3), 8);
    }
}
