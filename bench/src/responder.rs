//! The minimal Thrift backend used to measure proxy overhead.
//!
//! The real `uploader` hashes and stores every image, and that cost would
//! drown the proxies' differences; this responder answers `ping` and
//! `upload` (without storing anything) through the generated processor, with
//! the same thread-per-connection model as the incident's server: `workers`
//! threads, each serving one connection until it closes, the rest waiting in
//! the kernel's accept queue. Like that server it has no read timeout, on
//! purpose: a silent connection holds its worker until the peer closes it,
//! which is what the idle-clients workload shows of a proxy that connects
//! to the backend for every client. It runs as a child process of the bench
//! (`probegate-bench responder`) so it can be pinned to the server CPU and
//! stopped like the other servers, and it exposes the same
//! `uploader_connections_accepted_total` counter as the uploader, and
//! `responder_connections_without_calls_total`: connections that ended
//! without a single call answered, which is what a health probe that a
//! proxy let through to the backend looks like (pool and health-check
//! connections of a proxy carry calls).

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

use crate::scrape::{ACCEPTED, WITHOUT_CALLS};

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
        "reads through a {} KiB buffer and writes each reply in one write() (like Thrift's Java and Go servers); {}",
        SOCKET_BUFFER / 1024,
        uploader::malloc::describe()
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

/// What the admin page counts.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    without_calls: AtomicU64,
}

/// Binds both listeners on loopback port 0, prints the `listening` line and
/// serves until the process is terminated.
pub fn run(workers: usize) -> io::Result<()> {
    // The uploader's allocator settings, for the same reason (see
    // uploader::malloc): otherwise some responder processes map and fault
    // in every upload's buffers anew, at twice the CPU per upload.
    if !uploader::malloc::keep_large_buffers_in_heap() {
        eprintln!("responder: the C library refused fixed malloc thresholds; large buffers may be mapped anew for each call (see uploader::malloc)");
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let admin = TcpListener::bind("127.0.0.1:0")?;
    let thrift_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let counters = Arc::new(Counters::default());
    let processor = Arc::new(UploaderSyncProcessor::new(Handler));
    let mut threads = Vec::new();
    for _ in 0..workers.max(1) {
        let listener = listener.try_clone()?;
        let counters = Arc::clone(&counters);
        let processor = Arc::clone(&processor);
        threads.push(thread::spawn(move || {
            worker(&listener, &processor, &counters)
        }));
    }
    {
        let counters = Arc::clone(&counters);
        threads.push(thread::spawn(move || {
            for stream in admin.incoming().flatten() {
                let _ = answer_metrics(stream, &counters);
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

/// One worker thread: accepts and serves one connection at a time, forever.
fn worker(listener: &TcpListener, processor: &UploaderSyncProcessor<Handler>, counters: &Counters) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                if serve(processor, stream) == 0 {
                    counters.without_calls.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Serves one connection until the peer closes it or sends garbage, and
/// says how many calls it answered.
pub(crate) fn serve<H: UploaderSyncHandler>(
    processor: &UploaderSyncProcessor<H>,
    stream: TcpStream,
) -> u64 {
    let _ = stream.set_nodelay(true);
    let (Ok(read_half), Ok(write_half)) = (stream.try_clone(), stream.try_clone()) else {
        return 0;
    };
    let read_half = BufReader::with_capacity(SOCKET_BUFFER, read_half);
    let mut input = TBinaryInputProtocol::new(TFramedReadTransport::new(read_half), true);
    let mut output = TBinaryOutputProtocol::new(FramedWriteTransport::new(write_half), true);
    let mut calls = 0;
    while processor.process(&mut input, &mut output).is_ok() {
        calls += 1;
    }
    calls
}

/// Any request on the admin port gets the counter page.
fn answer_metrics(mut stream: TcpStream, counters: &Counters) -> io::Result<()> {
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    let mut request = [0u8; 1024];
    let _ = stream.read(&mut request)?;
    let (accepted, without_calls) = (
        counters.accepted.load(Ordering::Relaxed),
        counters.without_calls.load(Ordering::Relaxed),
    );
    let body = format!(
        "# TYPE {ACCEPTED} counter\n{ACCEPTED} {accepted}\n# TYPE {WITHOUT_CALLS} counter\n{WITHOUT_CALLS} {without_calls}\n"
    );
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Conn, Writes};

    #[test]
    fn connections_that_end_without_a_call_are_counted_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counters = Arc::new(Counters::default());
        {
            let counters = Arc::clone(&counters);
            let processor = UploaderSyncProcessor::new(Handler);
            // Ends with the test process.
            thread::spawn(move || worker(&listener, &processor, &counters));
        }
        let timeout = Duration::from_secs(5);
        let mut client = Conn::open(addr, timeout, timeout, Writes::One).expect("connect");
        client.ping().expect("pong");
        drop(client);
        // A TCP probe, and an HTTP one a proxy let through.
        drop(TcpStream::connect(addr).expect("connect"));
        let mut http = TcpStream::connect(addr).expect("connect");
        http.write_all(b"HEAD /health HTTP/1.0\r\n\r\n")
            .expect("write");
        drop(http);
        let deadline = std::time::Instant::now() + timeout;
        while counters.accepted.load(Ordering::Relaxed) < 3
            || counters.without_calls.load(Ordering::Relaxed) < 2
        {
            assert!(std::time::Instant::now() < deadline, "counters stuck");
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(50));
        assert_eq!(counters.accepted.load(Ordering::Relaxed), 3);
        assert_eq!(
            counters.without_calls.load(Ordering::Relaxed),
            2,
            "the connection with a call is not one of them"
        );
    }
}
