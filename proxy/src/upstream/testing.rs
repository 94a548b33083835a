//! Test support: a tiny real Thrift backend on 127.0.0.1:0 (the generated
//! processor behind a tokio accept loop) whose behaviour tests can change,
//! and real Thrift clients (the generated sync client over a std socket).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport,
    TIoChannel, TTcpChannel,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uploader_idl::UploaderSyncClient;

use bytes::BytesMut;

use super::call::Reply;
use crate::config::Config;
use crate::protocols::thrift::{delimit, Delimit};
use crate::protocols::thrift::{Flavor, Protocol, Transport};

/// What the test backend does with the calls it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Reply after this long.
    Delay(Duration),
    /// Reply to calls of these methods after their delay, to others at once.
    DelayMethods(Vec<(&'static str, Duration)>),
    /// Close the connection instead of replying, for the next N calls.
    CloseOnCall(usize),
    /// Never reply (the connection stays open).
    Hang,
}

/// A running test backend. Stops when dropped.
pub struct Responder {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Connections open now, and the most ever open at once.
    pub open: Arc<AtomicUsize>,
    pub peak_open: Arc<AtomicUsize>,
    /// Method names of the calls read, in order.
    pub calls: Arc<Mutex<Vec<String>>>,
    /// The calls read, whole, as they arrived.
    messages: Arc<Mutex<Vec<bytes::Bytes>>>,
    /// Bytes received after the call a hanging connection hangs on.
    pub swallowed: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    /// Cancelling it closes every open connection.
    kill: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Responder {
    pub async fn start(flavor: Flavor) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let responder = Responder {
            addr: listener.local_addr().expect("addr"),
            accepted: Arc::default(),
            open: Arc::default(),
            peak_open: Arc::default(),
            calls: Arc::default(),
            messages: Arc::default(),
            swallowed: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Normal)),
            kill: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (accepted, open, peak) = (
            Arc::clone(&responder.accepted),
            Arc::clone(&responder.open),
            Arc::clone(&responder.peak_open),
        );
        let (calls, messages, swallowed, mode, kill, stop) = (
            Arc::clone(&responder.calls),
            Arc::clone(&responder.messages),
            Arc::clone(&responder.swallowed),
            Arc::clone(&responder.mode),
            Arc::clone(&responder.kill),
            responder.stop.clone(),
        );
        tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (mut stream, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                // As Thrift's own servers do: without it, a second reply
                // written before the first is acknowledged waits for the
                // proxy's delayed ACK (up to 40 ms on Linux).
                let _ = stream.set_nodelay(true);
                accepted.fetch_add(1, Ordering::SeqCst);
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let (open, calls, messages, swallowed, mode) = (
                    Arc::clone(&open),
                    Arc::clone(&calls),
                    Arc::clone(&messages),
                    Arc::clone(&swallowed),
                    Arc::clone(&mode),
                );
                let killed = kill.lock().unwrap().clone();
                conns.spawn(async move {
                    tokio::select! {
                        _ = killed.cancelled() => {}
                        _ = serve(&mut stream, flavor, &calls, &messages, &swallowed, &mode) => {}
                    }
                    drop(stream);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        responder
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Closes every connection open now (as a backend restart would).
    pub fn close_connections(&self) {
        let mut kill = self.kill.lock().unwrap();
        kill.cancel();
        *kill = CancellationToken::new();
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls read so far, whole, as they arrived.
    pub fn messages(&self) -> Vec<bytes::Bytes> {
        self.messages.lock().unwrap().clone()
    }
}

/// `len` bytes that differ along the whole run (position within a page and
/// page number both show), so a misplaced or repeated page of a large body
/// is caught.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
        .collect()
}

async fn serve(
    stream: &mut tokio::net::TcpStream,
    flavor: Flavor,
    calls: &Mutex<Vec<String>>,
    messages: &Mutex<Vec<bytes::Bytes>>,
    swallowed: &AtomicUsize,
    mode: &Mutex<Mode>,
) {
    // One buffer for the connection: a oneway call may arrive in the same
    // segment as the call after it.
    let mut buf = BytesMut::new();
    loop {
        let Some(call) = next_message(stream, flavor, &mut buf).await else {
            return;
        };
        calls.lock().unwrap().push(call.header.name.to_string());
        messages.lock().unwrap().push(call.bytes.clone());
        let action = {
            let mut mode = mode.lock().unwrap();
            let action = mode.clone();
            if let Mode::CloseOnCall(n) = &mut *mode {
                *n -= 1;
                if *n == 0 {
                    *mode = Mode::Normal;
                }
            }
            action
        };
        match action {
            Mode::Normal => {}
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::DelayMethods(delays) => {
                if let Some((_, d)) = delays.iter().find(|(m, _)| *m == call.header.name) {
                    tokio::time::sleep(*d).await;
                }
            }
            Mode::CloseOnCall(_) => return,
            Mode::Hang => {
                // Never reply, but count what else arrives (already
                // buffered, then read) and notice when the peer closes.
                swallowed.fetch_add(buf.len(), Ordering::SeqCst);
                let mut sink = [0u8; 512];
                while let Ok(n @ 1..) = stream.read(&mut sink).await {
                    swallowed.fetch_add(n, Ordering::SeqCst);
                }
                return;
            }
        }
        let body = match flavor.transport {
            Transport::Framed => &call.bytes[4..],
            Transport::Buffered => &call.bytes[..],
        };
        let (reply, _) = crate::protocols::thrift::testing::processor_answer(flavor.protocol, body);
        if reply.is_empty() {
            continue; // oneway
        }
        let mut out = Vec::with_capacity(reply.len() + 4);
        if flavor.transport == Transport::Framed {
            out.extend_from_slice(&(reply.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn next_message(
    stream: &mut tokio::net::TcpStream,
    flavor: Flavor,
    buf: &mut BytesMut,
) -> Option<Reply> {
    loop {
        if let Ok(Delimit::Complete { len, header }) = delimit(flavor, buf, 64 << 20) {
            let bytes = buf.split_to(len).freeze();
            return Some(Reply { bytes, header });
        }
        buf.reserve(64 * 1024);
        match stream.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
}

/// The generated blocking client over a real socket.
pub type Client =
    UploaderSyncClient<Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>>;

pub fn client(addr: SocketAddr, flavor: Flavor) -> Client {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (r, w) = TTcpChannel::with_stream(stream).split().expect("split");
    let (r, w): (
        Box<dyn thrift::transport::TReadTransport + Send>,
        Box<dyn thrift::transport::TWriteTransport + Send>,
    ) = match flavor.transport {
        Transport::Framed => (
            Box::new(TFramedReadTransport::new(r)),
            Box::new(TFramedWriteTransport::new(w)),
        ),
        Transport::Buffered => (
            Box::new(TBufferedReadTransport::new(r)),
            Box::new(TBufferedWriteTransport::new(w)),
        ),
    };
    let (i, o): (
        Box<dyn TInputProtocol + Send>,
        Box<dyn TOutputProtocol + Send>,
    ) = match flavor.protocol {
        Protocol::Binary => (
            Box::new(TBinaryInputProtocol::new(r, true)),
            Box::new(TBinaryOutputProtocol::new(w, true)),
        ),
        Protocol::Compact => (
            Box::new(TCompactInputProtocol::new(r)),
            Box::new(TCompactOutputProtocol::new(w)),
        ),
    };
    UploaderSyncClient::new(i, o)
}

/// A config for `backends` (address, max_connections, flavor) plus extra
/// TOML sections.
pub fn config(backends: &[(SocketAddr, usize, Flavor)], extra: &str) -> Config {
    let mut text = String::from(extra);
    for (addr, max, flavor) in backends {
        let transport = match flavor.transport {
            Transport::Framed => "framed",
            Transport::Buffered => "buffered",
        };
        let protocol = match flavor.protocol {
            Protocol::Binary => "binary",
            Protocol::Compact => "compact",
        };
        text.push_str(&format!(
            "\n[[backends]]\naddress = \"{addr}\"\nmax_connections = {max}\ntransport = \"{transport}\"\nprotocol = \"{protocol}\"\n"
        ));
    }
    Config::parse(&text).expect("test config")
}

/// Polls `cond` until it holds, failing after a bound.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
