//! Message headers decoded straight from the bytes.
//!
//! Every call has two headers read (the request's and the reply's), and
//! the `thrift` crate's `read_message_begin` allocates two zeroed buffers
//! for each (the first four bytes, then the name): in the profile that was
//! about 8 % of probegate's own instructions per call. A header is a few
//! fixed fields, so this module reads them from the slice; the name is a
//! `CompactString`, inline up to 24 bytes, so a usual method name costs no
//! allocation (two per call less: ~7 % of probegate's own instructions).
//! It follows thrift 0.25's `TBinaryInputProtocol` (strict) and
//! `TCompactInputProtocol` rule for rule: the same headers
//! accepted, the same "bytes needed" when the slice ends early, and errors
//! that start with the crate's own text and then name the offending value
//! (the crate's errors print only their kind). The tests compare both on
//! every truncation of many headers and on random bytes.

use compact_str::CompactString;
use thrift::protocol::TMessageType;

use super::wire::MAX_NAME_BYTES;
use super::{MessageHeader, Protocol};

/// Why no header could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// The slice ends before the header: at least `wanted` bytes (from the
    /// start of the slice) are needed to read further.
    Eof { wanted: usize },
    /// Not a header of this protocol.
    Bad(String),
}

/// `TBinaryProtocol` strict version word: the first two bytes.
const BINARY_VERSION_1: [u8; 2] = [0x80, 0x01];
/// `TCompactProtocol`: the protocol id byte, and the version in the low
/// five bits of the next.
const COMPACT_PROTOCOL_ID: u8 = 0x82;
const COMPACT_VERSION: u8 = 1;
const COMPACT_VERSION_MASK: u8 = 0x1F;
/// The longest varint32 the crate reads.
const MAX_VARINT32_BYTES: usize = 5;

/// Decodes the header at `buf[pos..]`; returns it and where it ends.
pub(crate) fn decode(
    protocol: Protocol,
    buf: &[u8],
    pos: usize,
) -> Result<(MessageHeader, usize), HeaderError> {
    let mut cursor = Cursor { buf, pos };
    let header = match protocol {
        Protocol::Binary => binary(&mut cursor)?,
        Protocol::Compact => compact(&mut cursor)?,
    };
    Ok((header, cursor.pos))
}

fn binary(c: &mut Cursor<'_>) -> Result<MessageHeader, HeaderError> {
    let first = c.take(4)?;
    // Strict form only: probegate refuses unversioned binary messages.
    if first[0] & 0x80 == 0 || first[..2] != BINARY_VERSION_1 {
        return Err(HeaderError::Bad(format!(
            "invalid thrift version: first bytes {:?}, strict binary starts [128, 1]",
            &first[..2]
        )));
    }
    let kind = message_type(first[3])?;
    let len = i32::from_be_bytes(c.array()?);
    if len < 0 {
        return Err(HeaderError::Bad(format!(
            "negative message size: method name length {len}"
        )));
    }
    let name = c.name(len as usize)?;
    let seqid = i32::from_be_bytes(c.array()?);
    Ok(MessageHeader { name, kind, seqid })
}

fn compact(c: &mut Cursor<'_>) -> Result<MessageHeader, HeaderError> {
    let id = c.byte()?;
    if id != COMPACT_PROTOCOL_ID {
        return Err(HeaderError::Bad(format!(
            "invalid thrift version: compact protocol id {id:#04x}, expected 0x82"
        )));
    }
    let type_and_version = c.byte()?;
    let version = type_and_version & COMPACT_VERSION_MASK;
    if version != COMPACT_VERSION {
        return Err(HeaderError::Bad(format!(
            "invalid thrift version: compact protocol version {version}, expected 1"
        )));
    }
    let kind = message_type(type_and_version >> 5)?;
    // Written as a u32 varint, not zigzag.
    let seqid = c.varint32()? as i32;
    let len = c.varint32()?;
    let name = c.name(len as usize)?;
    Ok(MessageHeader { name, kind, seqid })
}

fn message_type(byte: u8) -> Result<TMessageType, HeaderError> {
    match byte {
        0x01 => Ok(TMessageType::Call),
        0x02 => Ok(TMessageType::Reply),
        0x03 => Ok(TMessageType::Exception),
        0x04 => Ok(TMessageType::OneWay),
        other => Err(HeaderError::Bad(format!(
            "bad data: message type {other}, expected 1 to 4"
        ))),
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The next `n` bytes, or how many bytes the slice would need.
    fn take(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        let end = self.pos.saturating_add(n);
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(HeaderError::Eof { wanted: end })?;
        self.pos = end;
        Ok(bytes)
    }

    fn array(&mut self) -> Result<[u8; 4], HeaderError> {
        let bytes = self.take(4)?;
        Ok([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    fn byte(&mut self) -> Result<u8, HeaderError> {
        Ok(self.take(1)?[0])
    }

    fn varint32(&mut self) -> Result<u32, HeaderError> {
        let mut value = 0u32;
        for i in 0..MAX_VARINT32_BYTES {
            let b = self.byte()?;
            // Like the crate: bits past 32 are dropped, not refused.
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(HeaderError::Bad(
            "bad data: variable-length int over 5 bytes".to_string(),
        ))
    }

    /// A method name of `len` bytes: at most [`MAX_NAME_BYTES`], UTF-8.
    fn name(&mut self, len: usize) -> Result<CompactString, HeaderError> {
        if len > MAX_NAME_BYTES {
            return Err(HeaderError::Bad(format!(
                "message too long: method name of {len} bytes, at most {MAX_NAME_BYTES}"
            )));
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(CompactString::new)
            .map_err(|e| HeaderError::Bad(format!("bad data: method name is not UTF-8 ({e})")))
    }
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
