//! The `answerer-uring` target: the answerer's work on io_uring instead of
//! tokio over epoll.
//!
//! The `answerer` measures what a proxy's client side alone costs on
//! probegate's runtime, and the CPU goals sit below it. The lever named for
//! going lower is a runtime with fewer system calls per reply: io_uring,
//! where one `io_uring_enter` submits the replies to many clients and reaps
//! their next calls, and a multishot receive stays armed for the life of a
//! connection instead of a readiness registration plus a `recvfrom` per
//! call. This server answers exactly like the answerer (framed binary calls
//! through the responder's generated processor, the replies to the calls
//! read together written together), on one thread driving one ring in the
//! way io_uring is meant for networking (multishot accept and receive,
//! provided buffers, deferred task work), so the two floors are measured
//! side by side and the lever has a number.
//!
//! A connection has at most one send in flight, and its output is not
//! touched until the send completed: the kernel reads from it meanwhile.
//! Receives go to the provided buffers (uring_buffers.rs), never to a
//! connection's memory.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use bytes::BytesMut;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::answerer::{answer, next_frame, Processor, READ_BUFFER};
use crate::responder::Handler;
use crate::uring_buffers::BufferRing;

/// Submission queue entries: each connection has a send at most queued at a
/// time (its receive stays armed), and the queue is submitted when full.
const RING_ENTRIES: u32 = 256;
/// The buffer group the receives take their buffers from.
const BUFFER_GROUP: u16 = 1;
/// The user data of the listener's multishot accept and of the pause
/// before it is armed again after a failure; connections' user data is
/// their index shifted left by one, with the low bit saying which of its
/// operations completed.
const ACCEPT: u64 = u64::MAX;
const ACCEPT_PAUSE: u64 = u64::MAX - 1;
const RECV: u64 = 0;
const SEND: u64 = 1;
/// How long accepting pauses after a failure (out of descriptors, say),
/// as the tokio answerer does, instead of failing again at once.
const ACCEPT_PAUSE_NANOS: u32 = 10_000_000;

/// Binds a loopback port, prints the `listening` line and serves until the
/// process is terminated.
pub fn run() -> io::Result<()> {
    let server = Server::new(TcpListener::bind("127.0.0.1:0")?)?;
    println!("answerer-uring listening thrift={}", server.local_addr()?);
    io::stdout().flush()?;
    server.serve()
}

/// One client connection.
struct Conn {
    fd: OwnedFd,
    /// Bytes received and not yet answered (copied out of the provided
    /// buffers).
    input: BytesMut,
    /// Replies being sent: untouched while `sending`.
    output: Vec<u8>,
    /// Bytes of `output` already sent.
    sent: usize,
    /// The multishot receive is armed.
    receiving: bool,
    /// A send from `output` is in flight.
    sending: bool,
    /// The peer has sent everything: what is complete is still answered.
    eof: bool,
    /// Something failed: nothing more is answered.
    failed: bool,
}

impl Conn {
    /// Nothing in flight and nothing left to do: the slot can be freed.
    fn finished(&self) -> bool {
        !self.receiving && !self.sending && (self.failed || self.eof)
    }
}

/// The ring, its buffers, the listener and the connections it serves.
pub struct Server {
    ring: IoUring,
    buffers: BufferRing,
    processor: Processor,
    listener: TcpListener,
    accept: squeue::Entry,
    /// What the accept pause's timeout entry points to.
    pause: Box<types::Timespec>,
    conns: Vec<Option<Conn>>,
    /// Indexes of `conns` free for the next connection.
    free: Vec<usize>,
}

impl Server {
    /// Sets up the ring and its buffers and arms the accept on `listener`,
    /// on this thread, which is the one that must then `serve` (the ring
    /// has a single issuer). Fails where io_uring is unavailable (an older
    /// kernel, or a seccomp profile that forbids it).
    pub fn new(listener: TcpListener) -> io::Result<Server> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(RING_ENTRIES)
            .map_err(|e| io::Error::new(e.kind(), format!("io_uring unavailable here: {e}")))?;
        let buffers = BufferRing::register(&ring, BUFFER_GROUP)?;
        let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT);
        let mut server = Server {
            ring,
            buffers,
            processor: Processor::new(Handler),
            listener,
            accept,
            pause: Box::new(types::Timespec::new().nsec(ACCEPT_PAUSE_NANOS)),
            conns: Vec::new(),
            free: Vec::new(),
        };
        server.push(server.accept.clone())?;
        Ok(server)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the ring itself fails (then the connections are leaked,
    /// see `Drop`).
    pub fn serve(mut self) -> io::Result<()> {
        let mut completed: Vec<(u64, i32, u32)> = Vec::with_capacity(RING_ENTRIES as usize);
        loop {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            completed.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for (data, result, flags) in completed.drain(..) {
                self.completed(data, result, flags)?;
            }
        }
    }

    /// Handles one completion.
    fn completed(&mut self, user_data: u64, result: i32, flags: u32) -> io::Result<()> {
        match user_data {
            ACCEPT => return self.accepted(result, flags),
            ACCEPT_PAUSE => return self.push(self.accept.clone()),
            _ => {}
        }
        let index = (user_data >> 1) as usize;
        let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return Ok(());
        };
        let outcome = if user_data & 1 == RECV {
            self.received(index, &mut conn, result, flags)
        } else {
            self.sent(index, &mut conn, result)
        };
        if conn.failed && conn.receiving {
            // Ends the multishot receive; its last completion frees `conn`.
            let _ = socket2::SockRef::from(&conn.fd).shutdown(Shutdown::Both);
        }
        if conn.finished() {
            self.free.push(index);
        } else {
            self.conns[index] = Some(conn);
        }
        outcome
    }

    fn accepted(&mut self, result: i32, flags: u32) -> io::Result<()> {
        if result >= 0 {
            // SAFETY: a successful accept's result is a new descriptor that
            // nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            if let Err(e) = socket2::SockRef::from(&fd).set_tcp_nodelay(true) {
                eprintln!("answerer-uring: TCP_NODELAY: {e}");
            }
            let index = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let conn = Conn {
                fd,
                input: BytesMut::with_capacity(READ_BUFFER),
                output: Vec::new(),
                sent: 0,
                receiving: true,
                sending: false,
                eof: false,
                failed: false,
            };
            self.arm_receive(index, &conn)?;
            self.conns[index] = Some(conn);
        } else {
            eprintln!(
                "answerer-uring: accept failed: {}",
                io::Error::from_raw_os_error(-result)
            );
        }
        if cqueue::more(flags) {
            return Ok(());
        }
        if result >= 0 {
            return self.push(self.accept.clone());
        }
        // Out of descriptors fails again at once: pause first.
        let pause: *const types::Timespec = &*self.pause;
        self.push(opcode::Timeout::new(pause).build().user_data(ACCEPT_PAUSE))
    }

    /// A receive completed: keep its bytes and answer them, unless replies
    /// are still going out (`sent` answers once they are).
    fn received(
        &mut self,
        index: usize,
        conn: &mut Conn,
        result: i32,
        flags: u32,
    ) -> io::Result<()> {
        if let Some(id) = cqueue::buffer_select(flags) {
            // A buffer can come back with an error too: it returns to the
            // ring whatever the result.
            if result > 0 {
                conn.input
                    .extend_from_slice(self.buffers.filled(id, result as usize));
            }
            self.buffers.give_back(id);
        }
        conn.receiving = cqueue::more(flags);
        match result {
            0 => conn.eof = true,
            r if r < 0 && -r != libc::ENOBUFS => conn.failed = true,
            _ => {}
        }
        if !conn.receiving && !conn.eof && !conn.failed {
            // Out of buffers for a moment (they are back by now), or the
            // kernel ended the multishot: arm it again.
            conn.receiving = true;
            self.arm_receive(index, conn)?;
        }
        if conn.sending || conn.failed {
            return Ok(());
        }
        self.answer_all(index, conn)
    }

    /// A send completed: send the rest, or, with everything out, answer
    /// what arrived meanwhile.
    fn sent(&mut self, index: usize, conn: &mut Conn, result: i32) -> io::Result<()> {
        if result < 0 {
            conn.sending = false;
            conn.failed = true;
            return Ok(());
        }
        conn.sent += result as usize;
        if conn.sent < conn.output.len() {
            return self.send_rest(index, conn);
        }
        conn.sending = false;
        conn.output.clear();
        if conn.failed {
            return Ok(());
        }
        self.answer_all(index, conn)
    }

    /// Answers every complete call in the connection's input and sends the
    /// replies.
    fn answer_all(&mut self, index: usize, conn: &mut Conn) -> io::Result<()> {
        loop {
            let answered = next_frame(&mut conn.input).and_then(|frame| {
                frame
                    .map(|f| answer(&self.processor, &f, &mut conn.output))
                    .transpose()
            });
            match answered {
                Ok(Some(())) => {}
                Ok(None) => break,
                Err(e) => {
                    eprintln!("answerer-uring: connection closed: {e}");
                    conn.failed = true;
                    return Ok(());
                }
            }
        }
        if conn.output.is_empty() {
            return Ok(());
        }
        conn.sent = 0;
        conn.sending = true;
        self.send_rest(index, conn)
    }

    /// Sends what is left of the connection's output.
    fn send_rest(&mut self, index: usize, conn: &Conn) -> io::Result<()> {
        let rest = &conn.output[conn.sent..];
        let length = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        self.push(
            opcode::Send::new(types::Fd(conn.fd.as_raw_fd()), rest.as_ptr(), length)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(((index as u64) << 1) | SEND),
        )
    }

    fn arm_receive(&mut self, index: usize, conn: &Conn) -> io::Result<()> {
        self.push(
            opcode::RecvMulti::new(types::Fd(conn.fd.as_raw_fd()), self.buffers.group())
                .build()
                .user_data(((index as u64) << 1) | RECV),
        )
    }

    /// Queues one entry, submitting what is queued first when the queue is
    /// full; an error if the kernel then takes none of it (the loop would
    /// otherwise spin).
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: a send's buffer is its connection's output, which is
            // neither changed nor freed before the send completes (`sending`;
            // `Drop` leaks the connections); receives use the leaked
            // provided buffers; the accept's listener and the pause's
            // timespec belong to the server, and the kernel reads the
            // timespec when the entry is submitted.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            if self.ring.submit()? == 0 {
                return Err(io::Error::other(
                    "the submission queue is full and the kernel took none of it",
                ));
            }
        }
    }
}

impl Drop for Server {
    /// The connections are leaked, not freed: a send in flight may still be
    /// reading from one's output when the server goes (an error of the
    /// ring, a panic), and io_uring tears a ring down asynchronously.
    fn drop(&mut self) {
        std::mem::forget(std::mem::take(&mut self.conns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Conn as Client, Writes};
    use std::io::Read;
    use std::net::TcpStream;
    use std::sync::mpsc;
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Starts a server on its own thread (the thread that set up a
    /// single-issuer ring must be the one submitting), or says why io_uring
    /// could not be set up.
    fn start() -> Result<SocketAddr, io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (ready, started) = mpsc::channel();
        // Ends with the test process.
        std::thread::spawn(move || match Server::new(listener) {
            Ok(server) => {
                let _ = ready.send(server.local_addr());
                let _ = server.serve();
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        });
        started.recv_timeout(TIMEOUT).expect("server thread")
    }

    /// Where io_uring is refused (seccomp, old kernels), the server says so
    /// plainly and the bench lists the target as skipped with that reason;
    /// that message is what this checks there.
    fn start_or_report_unavailable() -> Option<SocketAddr> {
        match start() {
            Ok(addr) => Some(addr),
            Err(e) => {
                assert!(
                    e.to_string().starts_with("io_uring unavailable here"),
                    "an unexplained setup failure: {e}"
                );
                eprintln!("answerer-uring NOT EXERCISED: {e}; checked its error message only");
                None
            }
        }
    }

    #[test]
    fn answers_pings_and_uploads_on_many_connections_in_either_write_mode() {
        let Some(addr) = start_or_report_unavailable() else {
            return;
        };
        let clients: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    let writes = if i % 2 == 0 { Writes::One } else { Writes::Two };
                    // Connections come and go, so their slots are reused.
                    for _ in 0..3 {
                        let mut conn =
                            Client::open(addr, TIMEOUT, TIMEOUT, writes).expect("connect");
                        for _ in 0..50 {
                            conn.ping().expect("pong");
                        }
                        // Larger than a provided buffer: many receives.
                        conn.upload(&[i as u8; 200_000]).expect("upload answered");
                        conn.ping().expect("pong after the upload");
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client thread");
        }
    }

    #[test]
    fn a_bad_frame_closes_its_connection_only() {
        let Some(addr) = start_or_report_unavailable() else {
            return;
        };
        let mut good = Client::open(addr, TIMEOUT, TIMEOUT, Writes::One).expect("connect");
        good.ping().expect("pong");
        let mut bad = TcpStream::connect(addr).expect("connect");
        bad.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        bad.write_all(&[0x7f, 0, 0, 0, 1]).expect("write");
        let mut rest = Vec::new();
        bad.read_to_end(&mut rest)
            .expect("closed by the server, not left hanging");
        assert!(rest.is_empty(), "no reply to a bad frame: {rest:?}");
        good.ping().expect("the other connection is still answered");
        Client::open(addr, TIMEOUT, TIMEOUT, Writes::One)
            .expect("connect")
            .ping()
            .expect("and new ones too");
    }

    /// A framed strict-binary `ping` call with sequence id `seqid`, as
    /// probegate's health checks write it.
    fn ping_frame(seqid: i32) -> Vec<u8> {
        probegate::upstream::health::ping_call(
            probegate::protocols::thrift::Flavor::FRAMED_BINARY,
            seqid,
        )
        .expect("encode a ping")
    }

    #[test]
    fn calls_sent_before_the_peer_finished_are_all_answered() {
        let Some(addr) = start_or_report_unavailable() else {
            return;
        };
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let calls: Vec<u8> = (1..=3).flat_map(ping_frame).collect();
        stream.write_all(&calls).expect("write");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let mut replies = Vec::new();
        stream
            .read_to_end(&mut replies)
            .expect("answered, then closed by the server");
        let mut frames = 0;
        let mut rest = &replies[..];
        while let Some(prefix) = rest.get(..4) {
            let length = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
            assert!(rest.len() >= 4 + length, "a cut reply: {replies:?}");
            rest = &rest[4 + length..];
            frames += 1;
        }
        assert_eq!(frames, 3, "{replies:?}");
    }
}
