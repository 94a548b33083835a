//! Accepting public connections, and one look at each before tokio
//! registers it.
//!
//! A load balancer's TCP check (the incident's) connects and resets, or
//! closes, at once; by the time probegate accepts it, its RST or FIN is
//! usually in the socket already. Registering such a connection with epoll
//! (an `epoll_ctl` to add it, another to remove it), spawning a task and
//! waiting for a readiness event only to read that end cost more than the
//! probe itself. So every accepted socket is read once, non-blocking, while
//! it is still a plain socket ([`first_look`]): a connection that has
//! already ended is counted and closed right there; bytes read stay in the
//! buffer for detection (an HTTP check or a Thrift client usually sends at
//! once; an HTTP check that is whole and asks to close is answered right
//! there too, see protocols/http_once.rs); a socket with nothing yet is
//! registered and waited on as before,
//! so a silent connection is still bounded by `timeouts.first_byte`.
//!
//! Sockets are accepted with `accept4(SOCK_NONBLOCK)` (through rustix), so
//! no second system call makes them non-blocking.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::OwnedFd;

use bytes::BytesMut;
use rustix::net::{acceptfrom_with, SocketFlags};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;

use crate::detect::{read_ended, Detected, FIRST_READ_BYTES};

/// The public listening socket, accepting plain non-blocking sockets.
pub struct PublicListener {
    socket: AsyncFd<StdListener>,
}

impl PublicListener {
    /// Takes over a bound, listening tokio socket.
    pub fn new(listener: TcpListener) -> io::Result<PublicListener> {
        Ok(PublicListener {
            // Deprecated since tokio 1.54 as unsound for a type whose fd can
            // change under it; std's listener owns its fd for life. The
            // replacement, `AsyncFd::register`, is unsafe, which this crate
            // forbids.
            #[allow(deprecated)]
            socket: AsyncFd::new(listener.into_std()?)?,
        })
    }

    /// The next connection, not yet registered with the runtime, and its
    /// peer's address. Spends the task's cooperative budget like tokio's own
    /// listener (`AsyncFd` does not): while connections keep arriving every
    /// accept is ready at once, and without the budget the accept loop
    /// would never let the runtime's other tasks run.
    pub async fn accept(&self) -> io::Result<(StdStream, SocketAddr)> {
        tokio::task::coop::cooperative(self.next_accepted()).await
    }

    async fn next_accepted(&self) -> io::Result<(StdStream, SocketAddr)> {
        loop {
            let mut ready = self.socket.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| accept_nonblocking(listener.get_ref())) {
                return accepted;
            }
        }
    }
}

fn accept_nonblocking(listener: &StdListener) -> io::Result<(StdStream, SocketAddr)> {
    let (socket, peer) = acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    let peer = peer
        .and_then(|address| SocketAddr::try_from(address).ok())
        .ok_or_else(|| io::Error::other("accepted a connection with no IP peer address"))?;
    Ok((StdStream::from(socket), peer))
}

/// Reads what `socket` already holds, without waiting, into `buf` (which
/// must be empty). `Some` when the connection has already ended: what
/// detection would say of it (a probe's RST or FIN, or a failed read);
/// `None` when it is still open, with `buf` holding the bytes read, if any.
pub fn first_look(socket: &StdStream, buf: &mut BytesMut) -> Option<Detected> {
    debug_assert!(buf.is_empty());
    // Read onto the stack: a probe that has ended costs no allocation.
    let mut first = [0u8; FIRST_READ_BYTES];
    let mut reader = socket;
    match reader.read(&mut first) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&first[..n]);
            None
        }
        read => read_ended(read, true),
    }
}

/// Whether an accept error means the process is out of a resource (file
/// descriptors, memory), so that retrying at once would spin; other errors
/// (a connection aborted while queued, one without an IP address) concern
/// one connection only.
pub fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(
            rustix::io::Errno::MFILE
                | rustix::io::Errno::NFILE
                | rustix::io::Errno::NOBUFS
                | rustix::io::Errno::NOMEM
        )
    )
}

/// Closes with a reset so the peer learns at once, without a FIN handshake.
pub fn refuse(socket: OwnedFd) {
    let _ = rustix::net::sockopt::set_socket_linger(&socket, Some(std::time::Duration::ZERO));
    drop(socket);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Ending;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A connected pair over loopback: (client side, accepted side).
    async fn pair() -> (StdStream, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let listener = PublicListener::new(listener).expect("take over");
        let client = StdStream::connect(addr).expect("connect");
        let (accepted, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accepted within 5 s")
            .expect("accept");
        assert_eq!(peer, client.local_addr().expect("client addr"));
        (client, accepted)
    }

    /// Looks until the connection says something (its end arrives a moment
    /// after the client's close, at most), for at most 5 s.
    fn look_until_told(accepted: &StdStream) -> (Option<Detected>, BytesMut) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut buf = BytesMut::new();
            let look = first_look(accepted, &mut buf);
            if look.is_some() || !buf.is_empty() || Instant::now() > deadline {
                return (look, buf);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn a_reset_or_close_before_any_byte_is_an_rst_or_fin_probe() {
        for (end, ending) in [
            (
                (|s: StdStream| refuse(s.into())) as fn(StdStream),
                Ending::Rst,
            ),
            (drop as fn(StdStream), Ending::Fin),
        ] {
            let (client, accepted) = pair().await;
            end(client);
            let (look, buf) = look_until_told(&accepted);
            match look {
                Some(Detected::Probe(got)) => assert_eq!(got, ending),
                other => panic!("{ending:?} expected, looked: {other:?}"),
            }
            assert!(buf.is_empty());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_backlog_that_never_empties_still_lets_other_tasks_run() {
        // More than tokio's cooperative budget (128 operations per turn).
        const WAITING: usize = 300;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(1024).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let listener = PublicListener::new(listener).expect("take over");
        let _clients: Vec<StdStream> = (0..WAITING)
            .map(|_| StdStream::connect(addr).expect("connect"))
            .collect();
        let accept = || async {
            tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("accepted within 5 s")
                .expect("accept")
        };
        // The first accept waits for the runtime to report the listener
        // ready; from then on every accept is ready at once.
        accept().await;
        let other_ran = Arc::new(AtomicBool::new(false));
        tokio::spawn({
            let other_ran = Arc::clone(&other_ran);
            async move { other_ran.store(true, Ordering::SeqCst) }
        });
        for _ in 1..WAITING {
            accept().await;
        }
        assert!(
            other_ran.load(Ordering::SeqCst),
            "the other task never ran while {WAITING} waiting connections were accepted"
        );
    }

    #[test]
    fn only_resource_exhaustion_calls_for_a_pause_in_accepting() {
        for errno in [
            rustix::io::Errno::MFILE,
            rustix::io::Errno::NFILE,
            rustix::io::Errno::NOBUFS,
            rustix::io::Errno::NOMEM,
        ] {
            assert!(out_of_resources(&errno.into()), "{errno:?}");
        }
        for errno in [rustix::io::Errno::CONNABORTED, rustix::io::Errno::PROTO] {
            assert!(!out_of_resources(&errno.into()), "{errno:?}");
        }
        assert!(!out_of_resources(&io::Error::other("no IP peer address")));
    }

    #[tokio::test]
    async fn bytes_already_sent_are_kept_for_detection_even_if_the_client_closed() {
        let (mut client, accepted) = pair().await;
        client
            .write_all(b"HEAD /health HTTP/1.1\r\n\r\n")
            .expect("write");
        drop(client);
        let (look, buf) = look_until_told(&accepted);
        assert!(look.is_none(), "{look:?}");
        assert_eq!(&buf[..], b"HEAD /health HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_silent_connection_is_left_open_without_waiting() {
        let (_client, accepted) = pair().await;
        // Accepted non-blocking: a blocking socket would hang this look.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let looker = std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            let look = first_look(&accepted, &mut buf);
            let _ = done_tx.send((look, buf.len()));
        });
        let (look, read) = done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("first_look returned at once on a silent socket");
        looker.join().expect("looker");
        assert!(look.is_none(), "{look:?}");
        assert_eq!(read, 0);
    }
}
