//! The minimal Thrift backend used to measure proxy overhead.
//!
//! The real `uploader` hashes and stores every image, and that cost would
//! drown the proxies' differences; this responder answers `ping` and
//! `upload` (without storing anything) through the generated processor, with
//! the same thread-per-connection model as the incident's server: `workers`
//! threads, each serving one connection until it closes, the rest waiting in
//! the kernel's accept queue. It runs as a child process of the bench
//! (`probegate-bench responder`) so it can be pinned to the server CPU and
//! stopped like the other servers, and it exposes the same
//! `uploader_connections_accepted_total` counter as the uploader.

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use thrift::transport::TFramedReadTransport;
use uploader::framed_write::FramedWriteTransport;
use uploader_idl::{UploadRequest, UploadResult, UploaderSyncHandler, UploaderSyncProcessor};

use crate::scrape::ACCEPTED;

/// Buffer under each connection's framed reader: calls that arrive together
/// are read with one `read()`, as Thrift's Java (`TSocket`'s buffered
/// streams) and Go (`bufio`) servers do. Replies go out in one `write()`
/// each through the uploader's `FramedWriteTransport` (the `thrift` crate's
/// framed writer alone writes the length and the message separately, two
/// segments per reply).
pub(crate) const SOCKET_BUFFER: usize = 64 * 1024;

/// How the responder uses its sockets, for the bench's output.
pub fn describe_io() -> String {
    format!(
        "reads through a {} KiB buffer and writes each reply in one write() (like Thrift's Java and Go servers)",
        SOCKET_BUFFER / 1024
    )
}

/// Bound on one admin exchange, so a stuck scraper cannot hold the thread.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers without storage: `ping` -> "pong", `upload` -> the size received.
pub(crate) struct Handler;

impl UploaderSyncHandler for Handler {
    fn handle_ping(&self) -> thrift::Result<String> {
        Ok("pong".to_string())
    }

    fn handle_upload(&self, req: UploadRequest) -> thrift::Result<UploadResult> {
        Ok(UploadResult::new(
            String::new(),
            String::new(),
            req.data.len() as i64,
            None,
            None,
        ))
    }

    fn handle_touch(&self, _note: String) -> thrift::Result<()> {
        Ok(())
    }
}

/// Binds both listeners on loopback port 0, prints the `listening` line and
/// serves until the process is terminated.
pub fn run(workers: usize) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let admin = TcpListener::bind("127.0.0.1:0")?;
    let thrift_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let processor = Arc::new(UploaderSyncProcessor::new(Handler));
    let mut threads = Vec::new();
    for _ in 0..workers.max(1) {
        let listener = listener.try_clone()?;
        let accepted = Arc::clone(&accepted);
        let processor = Arc::clone(&processor);
        threads.push(thread::spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    serve(&processor, stream);
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }));
    }
    {
        let accepted = Arc::clone(&accepted);
        threads.push(thread::spawn(move || {
            for stream in admin.incoming().flatten() {
                let _ = answer_metrics(stream, accepted.load(Ordering::Relaxed));
            }
        }));
    }
    println!("responder listening thrift={thrift_addr} admin={admin_addr}");
    io::stdout().flush()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Serves one connection until the peer closes it or sends garbage.
fn serve(processor: &UploaderSyncProcessor<Handler>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (Ok(read_half), Ok(write_half)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    let read_half = BufReader::with_capacity(SOCKET_BUFFER, read_half);
    let mut input = TBinaryInputProtocol::new(TFramedReadTransport::new(read_half), true);
    let mut output = TBinaryOutputProtocol::new(FramedWriteTransport::new(write_half), true);
    while processor.process(&mut input, &mut output).is_ok() {}
}

/// Any request on the admin port gets the counter page.
fn answer_metrics(mut stream: TcpStream, accepted: u64) -> io::Result<()> {
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    let mut request = [0u8; 1024];
    let _ = stream.read(&mut request)?;
    let body = format!("# TYPE {ACCEPTED} counter\n{ACCEPTED} {accepted}\n");
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
