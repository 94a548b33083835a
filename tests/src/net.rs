//! Socket tricks that load-balancer health checks play, for tests that
//! imitate them: connecting from a chosen loopback source address (a
//! "probe range" such as `127.100.0.0/16`), closing with RST instead of
//! FIN, and reading until the server closes (and how it did).
//!
//! Only loopback addresses are accepted: tests send traffic nowhere else.

use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Connects to `target` from `source` (any port), within `timeout`. On
/// Linux the whole `127.0.0.0/8` is local, so `127.100.0.1` works as a
/// distinct client address without any setup.
pub fn connect_from(
    source: IpAddr,
    target: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    if !source.is_loopback() || !target.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tests use loopback only: {source} -> {target}"),
        ));
    }
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    socket.connect_timeout(&SockAddr::from(target), timeout)?;
    Ok(socket.into())
}

/// Closes `stream` with a TCP RST (`SO_LINGER` 0), as cloud health checks
/// do after the handshake.
pub fn close_with_rst(stream: TcpStream) -> io::Result<()> {
    let socket = Socket::from(stream);
    socket.set_linger(Some(Duration::ZERO))?;
    drop(socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn connects_from_another_loopback_address_and_resets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let source: IpAddr = "127.100.0.7".parse().unwrap();
        let client = connect_from(source, target, Duration::from_secs(5)).unwrap();
        let (mut accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
        close_with_rst(client).unwrap();
        accepted
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let err = accepted.read(&mut [0u8; 1]).expect_err("a reset, not EOF");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn refuses_non_loopback() {
        let target: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert!(
            connect_from("127.0.0.1".parse().unwrap(), target, Duration::from_secs(1)).is_err()
        );
    }
}

/// How the peer ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Eof,
    Reset,
}

/// Reads until the peer closes; panics when it is still open after `timeout`.
pub fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "connection still open after {timeout:?}; received {:?}",
            String::from_utf8_lossy(&got)
        );
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return (got, End::Reset)
            }
            Err(e) => panic!("reading until the peer closes: {e}"),
        }
    }
}
