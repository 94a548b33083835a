//! Thrift on the wire: which transport and protocol a peer speaks.
//!
//! probegate never interprets a request's arguments; it only needs to know
//! where a message begins and ends, what its header says, how to answer with
//! an exception in the peer's own dialect, and (when a client and a backend
//! speak different protocols) how to re-encode a message generically. All
//! decoding goes through the `thrift` crate's own protocol readers, except
//! the 4-byte frame length, the first byte that tells the encodings apart,
//! and the message header (`header`: read twice per call, and the crate's
//! reader allocates; checked against the crate by its tests).
//!
//! # Layout
//!
//! - `sniff`: recognise the first bytes of a client connection.
//! - `delimit`: find where the first whole message in a buffer ends.
//! - `exception`: build a `TApplicationException` reply.
//! - `header`: decode a message header without the crate's allocations.
//! - `transcode`: re-encode a message from one flavor to another.
//! - `wire` (private): the slice reader and the generic value walker the
//!   others share.
//! - `testing` (tests, and the `testing` feature for the criterion benches):
//!   real messages written by the generated client, in any flavor.

use std::fmt;

use compact_str::CompactString;
use serde::Deserialize;
use thrift::protocol::{TMessageIdentifier, TMessageType};

mod delimit;
mod exception;
mod header;
#[cfg(test)]
mod properties;
mod sniff;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transcode;
mod wire;

pub use delimit::{delimit, frame_header, Delimit};
pub use exception::encode_exception;
pub use sniff::{sniff, Sniff};
pub use transcode::transcode;

/// How messages are delimited on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Each message is preceded by its length as a 4-byte big-endian integer.
    Framed,
    /// Messages follow each other with no envelope (TBufferedTransport).
    Buffered,
}

/// How a message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TBinaryProtocol, strict (versioned) form only.
    Binary,
    /// TCompactProtocol.
    Compact,
}

/// A transport and a protocol: everything needed to read or write a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flavor {
    pub transport: Transport,
    pub protocol: Protocol,
}

impl Flavor {
    pub const FRAMED_BINARY: Flavor = Flavor::new(Transport::Framed, Protocol::Binary);
    pub const FRAMED_COMPACT: Flavor = Flavor::new(Transport::Framed, Protocol::Compact);
    pub const BUFFERED_BINARY: Flavor = Flavor::new(Transport::Buffered, Protocol::Binary);
    pub const BUFFERED_COMPACT: Flavor = Flavor::new(Transport::Buffered, Protocol::Compact);
    /// Every flavor probegate speaks, for tests and tables.
    pub const ALL: [Flavor; 4] = [
        Flavor::FRAMED_BINARY,
        Flavor::FRAMED_COMPACT,
        Flavor::BUFFERED_BINARY,
        Flavor::BUFFERED_COMPACT,
    ];

    pub const fn new(transport: Transport, protocol: Protocol) -> Flavor {
        Flavor {
            transport,
            protocol,
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.transport {
            Transport::Framed => "framed",
            Transport::Buffered => "buffered",
        };
        let protocol = match self.protocol {
            Protocol::Binary => "binary",
            Protocol::Compact => "compact",
        };
        write!(f, "{transport}+{protocol}")
    }
}

/// The envelope of a Thrift message: everything probegate looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// The method name, as sent (at most a few hundred bytes of UTF-8;
    /// inline up to 24).
    pub name: CompactString,
    /// Call, Oneway, Reply or Exception.
    pub kind: TMessageType,
    /// The sender's sequence id; a reply must carry the call's.
    pub seqid: i32,
}

impl MessageHeader {
    /// Whether the sender expects no reply.
    pub fn is_oneway(&self) -> bool {
        self.kind == TMessageType::OneWay
    }

    /// Whether it is something a client may send: a call, oneway or not
    /// (not a reply or an exception).
    pub fn is_call(&self) -> bool {
        matches!(self.kind, TMessageType::Call | TMessageType::OneWay)
    }
}

/// The `thrift` crate's header, as the header tests' oracle reads it.
#[cfg(test)]
impl From<TMessageIdentifier> for MessageHeader {
    fn from(id: TMessageIdentifier) -> Self {
        MessageHeader {
            name: id.name.into(),
            kind: id.message_type,
            seqid: id.sequence_number,
        }
    }
}

impl From<&MessageHeader> for TMessageIdentifier {
    fn from(h: &MessageHeader) -> Self {
        TMessageIdentifier::new(h.name.to_string(), h.kind, h.seqid)
    }
}

/// Why bytes are not a Thrift message probegate will handle. The connection
/// is closed and counted under [`InvalidThrift::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidThrift {
    /// A frame (or a buffered message) longer than `limits.max_frame_bytes`.
    /// Decided from the length alone: nothing of that size is allocated.
    #[error("frame of {len} bytes exceeds limits.max_frame_bytes = {max}")]
    FrameTooLarge { len: u64, max: usize },
    /// Old unversioned TBinaryProtocol: it starts with the method name's
    /// length, which cannot be told apart from a frame length reliably.
    #[error("non-strict (unversioned) binary protocol is not supported")]
    NonStrictBinary,
    /// THeader transport (`0F FF` after the frame length): not supported.
    #[error("THeader transport is not supported")]
    THeader,
    /// The first bytes are not a Thrift message header we accept.
    #[error("not a Thrift message header: {0}")]
    BadHeader(String),
    /// The header decoded but the message body does not.
    #[error("malformed Thrift message: {0}")]
    BadMessage(String),
}

impl InvalidThrift {
    /// The metric label for `probegate_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidThrift::FrameTooLarge { .. } => "frame_too_large",
            InvalidThrift::NonStrictBinary => "non_strict_binary",
            InvalidThrift::THeader => "theader",
            InvalidThrift::BadHeader(_) | InvalidThrift::BadMessage(_) => "bad_thrift",
        }
    }
}
