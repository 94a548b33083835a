//! Thrift on the wire: which transport and protocol a peer speaks.
//!
//! probegate never deserialises a request's arguments; it only needs to know
//! where a message begins and ends, what its header says, and how to answer
//! with an exception in the peer's own dialect.

use serde::Deserialize;

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
