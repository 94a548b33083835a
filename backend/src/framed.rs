//! A framed read transport whose frame-size cap is configuration.
//!
//! The `thrift` crate's `TFramedReadTransport` refuses frames over 16,384,000
//! bytes and offers no way to change that, so uploads near or above that size
//! could never be served. This reader keeps the same wire format (a 4-byte
//! big-endian length, then the frame) with a configured cap, and refuses an
//! over-cap length from the header alone: nothing is allocated or read for
//! such a frame. Frames within the cap are buffered only as their bytes
//! arrive (the buffer at most doubles what came), so a client that announces
//! a large frame and then stalls costs what it actually sent, not what it
//! promised. The buffer is kept for the connection's next frame and zeroed
//! only where it grows: zeroing each 1 MiB upload's buffer again was a tenth
//! of the uploader's CPU per upload.

use std::io::{self, Read};

use thrift::transport::{TReadTransport, TReadTransportFactory};

/// The first read of a frame's body asks for at most this much; later ones
/// for as much again as has arrived.
const FIRST_READ: usize = 64 * 1024;

/// Reads Thrift frames of at most `max_frame` bytes from `chan`.
#[derive(Debug)]
pub struct CappedFramedReadTransport<C> {
    chan: C,
    /// The current frame is `buf[..frame_len]`; `pos` is how much of it has
    /// been handed out. Past `frame_len`, what earlier frames left (zeroed or
    /// read, never uninitialised).
    buf: Vec<u8>,
    frame_len: usize,
    pos: usize,
    /// Largest frame accepted, in bytes.
    max_frame: usize,
}

impl<C: Read> CappedFramedReadTransport<C> {
    pub fn new(chan: C, max_frame: usize) -> Self {
        CappedFramedReadTransport {
            chan,
            buf: Vec::new(),
            frame_len: 0,
            pos: 0,
            max_frame,
        }
    }

    /// Bytes currently allocated for frame data (tests use it to prove an
    /// over-cap frame allocated nothing).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn next_frame(&mut self) -> io::Result<()> {
        let mut header = [0u8; 4];
        self.chan.read_exact(&mut header)?;
        let announced = i32::from_be_bytes(header);
        let len = usize::try_from(announced).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("negative frame size {announced}"),
            )
        })?;
        if len > self.max_frame {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame of {len} bytes exceeds the limit of {} bytes (server.max_upload_bytes plus overhead)",
                    self.max_frame
                ),
            ));
        }
        // Nothing of a frame that fails half-way is ever handed out.
        self.frame_len = 0;
        self.pos = 0;
        let mut got = 0;
        while got < len {
            let end = len.min(got + got.max(FIRST_READ));
            if self.buf.len() < end {
                self.buf.reserve_exact(end - self.buf.len());
                self.buf.resize(end, 0);
            }
            match self.chan.read(&mut self.buf[got..end]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed after {got} of {len} frame bytes"),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.frame_len = len;
        Ok(())
    }
}

impl<C: Read> Read for CappedFramedReadTransport<C> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // Empty frames are legal on the wire; skip them rather than report a
        // zero-length read, which callers take as end of stream.
        while self.pos == self.frame_len {
            self.next_frame()?;
        }
        let n = out.len().min(self.frame_len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Creates a `CappedFramedReadTransport` per accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct CappedFramedReadTransportFactory {
    pub max_frame: usize,
}

impl TReadTransportFactory for CappedFramedReadTransportFactory {
    fn create(&self, channel: Box<dyn Read + Send>) -> Box<dyn TReadTransport + Send> {
        Box::new(CappedFramedReadTransport::new(channel, self.max_frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    fn read_all(transport: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0; n];
        transport.read_exact(&mut out)?;
        Ok(out)
    }

    #[test]
    fn exact_size_frame_is_accepted() {
        let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut t = CappedFramedReadTransport::new(io::Cursor::new(frame(&body)), 1000);
        assert_eq!(read_all(&mut t, 1000).expect("frame at the cap"), body);
    }

    #[test]
    fn oversize_frame_is_refused_without_allocating() {
        // Announces 2 GB - 1 but carries nothing: the refusal must come from
        // the header, before any buffer is grown or any body byte is awaited.
        let wire = i32::MAX.to_be_bytes().to_vec();
        let mut t = CappedFramedReadTransport::new(io::Cursor::new(wire), 1000);
        let err = read_all(&mut t, 1).expect_err("over the cap");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("2147483647"), "{err}");
        assert_eq!(t.buffer_capacity(), 0);

        let mut t = CappedFramedReadTransport::new(io::Cursor::new(frame(&[7; 1001])), 1000);
        assert_eq!(
            read_all(&mut t, 1).expect_err("one over").kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(t.buffer_capacity(), 0);
    }

    /// Hands out `wire`, then fails as a read timeout does.
    struct StallsAfter(io::Cursor<Vec<u8>>);

    impl Read for StallsAfter {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.0.read(out)? {
                0 => Err(io::ErrorKind::TimedOut.into()),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn a_stalled_frame_costs_what_arrived_and_is_never_handed_out() {
        // Announces 8 MiB, sends 100 KiB, then stalls: the buffer holds about
        // what came (at most twice it), not the 8 MiB promised.
        let mut wire = (8u32 << 20).to_be_bytes().to_vec();
        wire.extend(vec![7u8; 100 * 1024]);
        let mut t = CappedFramedReadTransport::new(StallsAfter(io::Cursor::new(wire)), 16 << 20);
        let err = read_all(&mut t, 1).expect_err("stalled");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            t.buffer_capacity() <= 2 * 100 * 1024,
            "{} bytes buffered for 100 KiB received",
            t.buffer_capacity()
        );
        // The next read does not take the partial frame for a whole one.
        assert_eq!(
            read_all(&mut t, 1).expect_err("still stalled").kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[test]
    fn a_reused_buffer_hands_out_only_the_current_frame() {
        // A long frame, then a short one: the short one's bytes are not
        // followed by what the long one left in the buffer.
        let mut wire = frame(&[1; 5000]);
        wire.extend(frame(b"xy"));
        wire.extend(frame(b"z"));
        let mut t = CappedFramedReadTransport::new(io::Cursor::new(wire), 10_000);
        assert_eq!(read_all(&mut t, 5000).expect("long frame"), vec![1; 5000]);
        let mut out = [0u8; 10];
        assert_eq!(t.read(&mut out).expect("short frame"), 2);
        assert_eq!(&out[..2], b"xy");
        assert_eq!(t.read(&mut out).expect("third frame"), 1);
        assert_eq!(out[0], b'z');
    }

    #[test]
    fn negative_frame_size_is_refused() {
        let wire = (-5i32).to_be_bytes().to_vec();
        let mut t = CappedFramedReadTransport::new(io::Cursor::new(wire), 1000);
        let err = read_all(&mut t, 1).expect_err("negative");
        assert!(err.to_string().contains("-5"), "{err}");
    }

    #[test]
    fn frames_follow_each_other_and_empty_frames_are_skipped() {
        let mut wire = frame(b"abc");
        wire.extend(frame(b""));
        wire.extend(frame(b"defg"));
        let mut t = CappedFramedReadTransport::new(io::Cursor::new(wire), 10);
        assert_eq!(read_all(&mut t, 7).expect("two frames"), b"abcdefg");
        let mut rest = [0u8; 1];
        assert_eq!(
            t.read(&mut rest).expect_err("stream ended").kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn truncated_frame_is_end_of_file() {
        let mut wire = frame(b"abcdef");
        wire.truncate(7);
        let mut t = CappedFramedReadTransport::new(io::Cursor::new(wire), 10);
        let err = read_all(&mut t, 1).expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
