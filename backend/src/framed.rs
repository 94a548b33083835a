//! A framed read transport whose frame-size cap is configuration.
//!
//! The `thrift` crate's `TFramedReadTransport` refuses frames over 16,384,000
//! bytes and offers no way to change that, so uploads near or above that size
//! could never be served. This reader keeps the same wire format (a 4-byte
//! big-endian length, then the frame) with a configured cap, and refuses an
//! over-cap length from the header alone: nothing is allocated or read for
//! such a frame. Frames within the cap are buffered only as their bytes
//! arrive, so a client that announces a large frame and then stalls costs
//! what it actually sent, not what it promised.

use std::io::{self, Read};

use thrift::transport::{TReadTransport, TReadTransportFactory};

/// Reads Thrift frames of at most `max_frame` bytes from `chan`.
#[derive(Debug)]
pub struct CappedFramedReadTransport<C> {
    chan: C,
    /// The current frame; `pos` is how much of it has been handed out.
    buf: Vec<u8>,
    pos: usize,
    /// Largest frame accepted, in bytes.
    max_frame: usize,
}

impl<C: Read> CappedFramedReadTransport<C> {
    pub fn new(chan: C, max_frame: usize) -> Self {
        CappedFramedReadTransport {
            chan,
            buf: Vec::new(),
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
        self.buf.clear();
        self.pos = 0;
        let got = (&mut self.chan)
            .take(len as u64)
            .read_to_end(&mut self.buf)?;
        if got < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed after {got} of {len} frame bytes"),
            ));
        }
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
        while self.pos == self.buf.len() {
            self.next_frame()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
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
