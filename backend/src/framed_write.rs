//! A framed write transport that sends each message with one write.
//!
//! The `thrift` crate's `TFramedWriteTransport` writes the 4-byte length and
//! then the message: on a bare socket that is two segments per reply, a
//! second `sendto`, and a peer (the client, or probegate) woken up to
//! twice. A `BufWriter` beneath it would merge them, but a `BufWriter` keeps
//! what it could not send and sends it again when dropped: after a write
//! that timed out on a client that stopped reading, a second full
//! `server.write_timeout` for the worker thread. This transport builds the
//! frame in one buffer, length first, hands it to the socket with one
//! `write_all`, and forgets it whether or not that worked.

use std::io::{self, Write};

/// The length prefix, at the start of the frame buffer.
const LENGTH: usize = 4;

/// The frame buffer kept between messages; a larger reply's is given back.
const KEPT_CAPACITY: usize = 16 * 1024;

/// Writes Thrift frames (4-byte big-endian length, then the message) to
/// `channel`, each with one `write_all` when flushed.
#[derive(Debug)]
pub struct FramedWriteTransport<C> {
    channel: C,
    /// The frame being built: room for the length, then the message.
    frame: Vec<u8>,
}

impl<C: Write> FramedWriteTransport<C> {
    pub fn new(channel: C) -> Self {
        FramedWriteTransport {
            channel,
            frame: vec![0; LENGTH],
        }
    }

    /// Sends the frame built so far; returns what the socket said.
    fn send_frame(&mut self) -> io::Result<()> {
        let len = self.frame.len() - LENGTH;
        let announced = i32::try_from(len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a message of {len} bytes does not fit a Thrift frame (at most {} bytes)",
                    i32::MAX
                ),
            )
        })?;
        self.frame[..LENGTH].copy_from_slice(&announced.to_be_bytes());
        self.channel.write_all(&self.frame)?;
        self.channel.flush()
    }
}

impl<C: Write> Write for FramedWriteTransport<C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.frame.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.frame.len() == LENGTH {
            return self.channel.flush();
        }
        let sent = self.send_frame();
        // Sent or not, the message is done with: a failed write ends the
        // connection, and nothing is retried when the transport is dropped.
        self.frame.truncate(LENGTH);
        self.frame.shrink_to(KEPT_CAPACITY);
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each write that reaches it; fails the first `fail` of them.
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        fail: usize,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.writes.push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut bytes = (message.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(message);
        bytes
    }

    #[test]
    fn each_message_leaves_in_one_write() {
        let mut socket = Socket::default();
        let mut framed = FramedWriteTransport::new(&mut socket);
        framed.write_all(b"a reply").expect("buffered");
        framed.write_all(b" in two parts").expect("buffered");
        framed.flush().expect("sent");
        framed.write_all(b"the next one").expect("buffered");
        framed.flush().expect("sent");
        framed.flush().expect("nothing to send");
        drop(framed);
        assert_eq!(
            socket.writes,
            [frame(b"a reply in two parts"), frame(b"the next one")]
        );
    }

    #[test]
    fn a_large_message_is_one_write_too_and_its_buffer_is_given_back() {
        let mut socket = Socket::default();
        let mut framed = FramedWriteTransport::new(&mut socket);
        let large = vec![7u8; 1 << 20];
        framed.write_all(&large).expect("buffered");
        framed.flush().expect("sent");
        assert!(framed.frame.capacity() <= KEPT_CAPACITY);
        drop(framed);
        assert_eq!(socket.writes, [frame(&large)]);
    }

    #[test]
    fn a_failed_write_is_not_sent_again() {
        let mut socket = Socket {
            fail: 1,
            ..Socket::default()
        };
        let mut framed = FramedWriteTransport::new(&mut socket);
        framed.write_all(b"lost").expect("buffered");
        let error = framed.flush().expect_err("the socket refused it");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        framed.flush().expect("nothing left to send");
        drop(framed);
        assert!(socket.writes.is_empty(), "{:?}", socket.writes);
    }
}
