//! The Thrift dialect a connection speaks: transport framing and protocol.
//!
//! Server and client must agree on both, and nothing on the wire announces
//! them reliably, so they are configuration (`server.protocol`,
//! `server.transport`) on the server and flags (`--protocol`, `--transport`)
//! on the client. One type for both keeps the spelling identical.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// How Thrift messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `TBinaryProtocol`, strict (versioned) messages: Apache Thrift's default.
    #[default]
    Binary,
    /// `TCompactProtocol`.
    Compact,
}

/// How messages are delimited on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Each message is preceded by its length as a 4-byte big-endian integer.
    #[default]
    Framed,
    /// Messages follow each other with no delimiter; a reader learns where one
    /// ends only by decoding it.
    Buffered,
}

/// A transport and a protocol: everything both ends must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flavor {
    pub transport: Transport,
    pub protocol: Protocol,
}

impl Flavor {
    pub const fn new(transport: Transport, protocol: Protocol) -> Self {
        Flavor {
            transport,
            protocol,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Binary => "binary",
            Protocol::Compact => "compact",
        })
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Framed => "framed",
            Transport::Buffered => "buffered",
        })
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.transport, self.protocol)
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "binary" => Ok(Protocol::Binary),
            "compact" => Ok(Protocol::Compact),
            other => Err(format!(
                "unknown protocol {other:?}; expected \"binary\" or \"compact\""
            )),
        }
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "framed" => Ok(Transport::Framed),
            "buffered" => Ok(Transport::Buffered),
            other => Err(format!(
                "unknown transport {other:?}; expected \"framed\" or \"buffered\""
            )),
        }
    }
}
