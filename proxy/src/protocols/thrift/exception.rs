//! Answering a call ourselves with a `TApplicationException`.
//!
//! When probegate cannot get a call to a backend (queue full, queue wait
//! expired, no backend up, request timeout), the client must get a proper
//! Thrift error in its own transport and protocol, carrying its method name
//! and seqid, so that its generated client raises an application error
//! instead of hanging or failing to decode. The struct is written by the
//! `thrift` crate itself (`Error::write_application_error_to_out_protocol`).

use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TMessageIdentifier, TMessageType,
    TOutputProtocol,
};
use thrift::{ApplicationError, ApplicationErrorKind};

use super::{Flavor, Protocol, Transport};

/// A whole TApplicationException reply (frame prefix included when framed)
/// for `name`/`seqid`.
pub fn encode_exception(
    flavor: Flavor,
    name: &str,
    seqid: i32,
    kind: ApplicationErrorKind,
    message: &str,
) -> Vec<u8> {
    let framed = flavor.transport == Transport::Framed;
    // Room for the frame length, filled in once the body's size is known.
    let mut out: Vec<u8> = if framed { vec![0; 4] } else { Vec::new() };
    let error = ApplicationError::new(kind, message);
    let header = TMessageIdentifier::new(name, TMessageType::Exception, seqid);
    let written = match flavor.protocol {
        Protocol::Binary => write(
            &mut TBinaryOutputProtocol::new(&mut out, true),
            &header,
            &error,
        ),
        Protocol::Compact => write(&mut TCompactOutputProtocol::new(&mut out), &header, &error),
    };
    // Writing to a Vec cannot fail at the I/O level, and the values written
    // are a string, an i32 and a header: the protocols have no other reason
    // to refuse them.
    if let Err(e) = written {
        unreachable!("encoding a TApplicationException into memory failed: {e}");
    }
    if framed {
        // Bodies are a header plus the message: far below 4 GiB.
        let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
        out[..4].copy_from_slice(&len.to_be_bytes());
    }
    out
}

fn write(
    o: &mut dyn TOutputProtocol,
    header: &TMessageIdentifier,
    error: &ApplicationError,
) -> thrift::Result<()> {
    o.write_message_begin(header)?;
    thrift::Error::write_application_error_to_out_protocol(error, o)?;
    o.write_message_end()?;
    o.flush()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use thrift::protocol::{TBinaryInputProtocol, TCompactInputProtocol, TInputProtocol};
    use thrift::transport::{TFramedReadTransport, TReadTransport};
    use uploader_idl::{TUploaderSyncClient, UploaderSyncClient};

    use super::*;
    use crate::protocols::thrift::{delimit, Delimit};

    /// The reply as the real generated client sees it: the client sends
    /// `ping` (seqid 1, its first call) into a sink and reads `reply`.
    fn client_ping_against(flavor: Flavor, reply: Vec<u8>) -> thrift::Result<String> {
        let read: Box<dyn TReadTransport> = match flavor.transport {
            Transport::Framed => Box::new(TFramedReadTransport::new(Cursor::new(reply))),
            Transport::Buffered => Box::new(Cursor::new(reply)),
        };
        let input: Box<dyn TInputProtocol> = match flavor.protocol {
            Protocol::Binary => Box::new(TBinaryInputProtocol::new(read, true)),
            Protocol::Compact => Box::new(TCompactInputProtocol::new(read)),
        };
        let output: Box<dyn TOutputProtocol> = match flavor.protocol {
            Protocol::Binary => Box::new(TBinaryOutputProtocol::new(std::io::sink(), true)),
            Protocol::Compact => Box::new(TCompactOutputProtocol::new(std::io::sink())),
        };
        UploaderSyncClient::new(input, output).ping()
    }

    #[test]
    fn the_generated_client_decodes_it_as_an_application_error() {
        for flavor in Flavor::ALL {
            let reply = encode_exception(
                flavor,
                "ping",
                1,
                ApplicationErrorKind::InternalError,
                "probegate: queue full (max_queue = 3)",
            );
            match client_ping_against(flavor, reply) {
                Err(thrift::Error::Application(e)) => {
                    assert_eq!(e.kind, ApplicationErrorKind::InternalError, "{flavor}");
                    assert_eq!(
                        e.message, "probegate: queue full (max_queue = 3)",
                        "{flavor}"
                    );
                }
                other => panic!("{flavor}: expected an application error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_wrong_seqid_is_noticed_by_the_client() {
        // Proves the test above checks the seqid the exception carries.
        let reply = encode_exception(
            Flavor::FRAMED_BINARY,
            "ping",
            7,
            ApplicationErrorKind::Unknown,
            "x",
        );
        match client_ping_against(Flavor::FRAMED_BINARY, reply) {
            Err(thrift::Error::Application(e)) => {
                assert_eq!(e.kind, ApplicationErrorKind::BadSequenceId)
            }
            other => panic!("expected BadSequenceId, got {other:?}"),
        }
    }

    #[test]
    fn it_is_one_whole_message_by_delimit() {
        for flavor in Flavor::ALL {
            let reply = encode_exception(flavor, "upload", -5, ApplicationErrorKind::Unknown, "m");
            match delimit(flavor, &reply, 1 << 20) {
                Ok(Delimit::Complete { len, header }) => {
                    assert_eq!(len, reply.len(), "{flavor}");
                    assert_eq!(header.name, "upload");
                    assert_eq!(header.seqid, -5);
                    assert_eq!(header.kind, TMessageType::Exception);
                }
                other => panic!("{flavor}: {other:?}"),
            }
        }
    }
}
