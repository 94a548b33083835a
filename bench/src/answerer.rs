//! The `answerer` target: probegate's runtime answering every call itself,
//! with no backend behind it.
//!
//! Whatever a proxy does with the backend, it still receives each call from
//! the client's socket and sends each reply back, and sleeps and wakes in
//! between: work no proxy can skip. This server does only that, on the
//! runtime probegate builds (`probegate::runtime`; pinned to one CPU like
//! the proxies, as the bench runs it, tokio's current-thread scheduler
//! over epoll): it reads framed binary calls through a buffer
//! and answers them in memory with the responder's generated processor,
//! replies read together written together. Its CPU per call is the
//! reference floor the ping workloads measure proxies against, so the
//! output can say how far a CPU goal is from what a proxy on this runtime
//! could reach, measured in the same run. (It even decodes and encodes
//! each call with the generated processor, a little more than a proxy
//! needs: user space is a few percent of such a server's CPU.)

use std::io::{self, Write};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use probegate::config::Threads;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uploader_idl::UploaderSyncProcessor;

use crate::responder::{Handler, SOCKET_BUFFER};

/// Read buffer per connection, as the responder's.
pub(crate) const READ_BUFFER: usize = SOCKET_BUFFER;
/// Larger frames are refused (the connection is closed): the answerer serves
/// the ping workloads, whose frames are a few dozen bytes.
const MAX_FRAME: usize = 16 * 1024 * 1024;

pub(crate) type Processor = UploaderSyncProcessor<Handler>;

/// Binds a loopback port, prints the `listening` line and serves until the
/// process is terminated. (No admin port: with no backend there is no
/// backend connection to count.)
pub fn run() -> io::Result<()> {
    let (runtime, _) = probegate::runtime::build(Threads::Auto)?;
    runtime.block_on(serve())
}

async fn serve() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("answerer listening thrift={}", listener.local_addr()?);
    io::stdout().flush()?;
    accept_loop(listener).await
}

/// Accepts and answers connections until the process ends.
async fn accept_loop(listener: TcpListener) -> io::Result<()> {
    let processor = Arc::new(UploaderSyncProcessor::new(Handler));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("answerer: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let processor = Arc::clone(&processor);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &processor).await {
                eprintln!("answerer: connection from {peer} closed: {e}");
            }
        });
    }
}

/// Answers one connection's calls until the peer closes it.
async fn connection(mut stream: TcpStream, processor: &Processor) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = BytesMut::with_capacity(READ_BUFFER);
    let mut output = Vec::new();
    loop {
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        while let Some(frame) = next_frame(&mut input)? {
            answer(processor, &frame, &mut output)?;
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if input.capacity() - input.len() < READ_BUFFER / 4 {
            input.reserve(READ_BUFFER);
        }
    }
}

/// Splits off the next complete frame's message, if `input` holds one.
pub(crate) fn next_frame(input: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    let Some(prefix) = input.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if length > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes announced; at most {MAX_FRAME}"),
        ));
    }
    if input.len() < 4 + length {
        return Ok(None);
    }
    input.advance(4);
    Ok(Some(input.split_to(length)))
}

/// Processes one call and appends its framed reply (none for a oneway call).
pub(crate) fn answer(processor: &Processor, call: &[u8], output: &mut Vec<u8>) -> io::Result<()> {
    let start = output.len();
    output.extend_from_slice(&[0; 4]);
    {
        let mut i_prot = TBinaryInputProtocol::new(call, true);
        let mut o_prot = TBinaryOutputProtocol::new(&mut *output, true);
        processor
            .process(&mut i_prot, &mut o_prot)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad call: {e}")))?;
    }
    let length = output.len() - start - 4;
    if length == 0 {
        output.truncate(start);
    } else {
        output[start..start + 4].copy_from_slice(&(length as u32).to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Conn, Writes};
    use std::time::Duration;

    #[test]
    fn answers_pings_and_uploads_in_either_write_mode() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            runtime.block_on(async {
                // Ends with the test process; bounded so a stuck test ends too.
                let _ = tokio::time::timeout(Duration::from_secs(30), accept_loop(listener)).await;
            })
        });
        let timeout = Duration::from_secs(5);
        for writes in [Writes::One, Writes::Two] {
            let mut conn = Conn::open(addr, timeout, timeout, writes).expect("connect");
            for _ in 0..3 {
                conn.ping().expect("pong");
            }
            conn.upload(&[7u8; 200_000]).expect("upload answered");
        }
        drop(server);
    }

    #[test]
    fn frames_split_only_when_complete_and_oversized_ones_are_refused() {
        let mut input = BytesMut::from(&[0, 0, 0, 3, b'a', b'b'][..]);
        assert!(next_frame(&mut input).expect("fine").is_none());
        input.extend_from_slice(b"c\x00\x00");
        let frame = next_frame(&mut input).expect("fine").expect("complete");
        assert_eq!(&frame[..], b"abc");
        assert_eq!(&input[..], b"\x00\x00", "the next frame's start stays");
        let mut huge = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        let err = next_frame(&mut huge).expect_err("too large");
        assert!(err.to_string().contains("2130706432 bytes"), "{err}");
    }
}
