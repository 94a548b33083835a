//! The PROXY protocol header (v1 text or v2 binary) that a load balancer
//! puts in front of each connection to tell the real client address.
//!
//! Behind a balancer every TCP peer is the balancer itself, so the source
//! rules (`crate::classify`) must use the address inside this header. A v2
//! `LOCAL` header is the balancer speaking for itself: its health check
//! (AWS NLB sends its checks that way). Parsing is done by the `ppp` crate;
//! this module only reads the bytes with a bounded wait and a bounded size.
//! Bytes that arrive after the header in the same read are kept in the
//! caller's buffer for detection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A v2 header may carry TLVs; real balancers send well under this.
const MAX_HEADER_BYTES: usize = 4096;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The real client's address.
    Client(SocketAddr),
    /// v2 `LOCAL`: the balancer's own connection (a health check).
    Local,
    /// v1 `UNKNOWN` or a v2 address family without IPs: keep the peer address.
    Unknown,
}

/// Why no usable header was read. Each closes the connection, counted as
/// `probegate_rejected_total{reason="proxy_header"}`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed after {0} bytes, before a whole PROXY header")]
    Closed(usize),
    #[error("not a PROXY protocol header: {0}")]
    Malformed(String),
    #[error("PROXY header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header into `buf` and removes it from there; whatever
/// followed it stays in `buf`.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Proxied, ProxyHeaderError> {
    let read = async {
        loop {
            if let Some((proxied, len)) = parse(buf)? {
                buf.advance(len);
                return Ok(proxied);
            }
            if buf.len() >= MAX_HEADER_BYTES {
                return Err(ProxyHeaderError::TooLong);
            }
            buf.reserve(256);
            if stream.read_buf(buf).await? == 0 {
                return Err(ProxyHeaderError::Closed(buf.len()));
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ProxyHeaderError::Timeout(timeout))?
}

/// Parses a complete header at the start of `bytes`: `None` when more
/// bytes are needed, with the header's length otherwise.
pub fn parse(bytes: &[u8]) -> Result<Option<(Proxied, usize)>, ProxyHeaderError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    // Both signatures are known from their first bytes: refuse anything else
    // at once instead of waiting for more of it.
    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    const V1_SIGNATURE: &[u8] = b"PROXY ";
    const V1_MAX_BYTES: usize = 107;
    let n = bytes.len();
    if !V2_SIGNATURE.starts_with(&bytes[..n.min(12)])
        && !V1_SIGNATURE.starts_with(&bytes[..n.min(6)])
    {
        return Err(ProxyHeaderError::Malformed(format!(
            "starts with {:?}",
            String::from_utf8_lossy(&bytes[..n.min(16)])
        )));
    }
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        // A v1 line is complete at its CRLF (or must have ended by 107
        // bytes); `ppp` calls some malformed complete lines "incomplete".
        if bytes.starts_with(V1_SIGNATURE) {
            let line_end = bytes.windows(2).position(|w| w == b"\r\n");
            if line_end.is_some() || bytes.len() > V1_MAX_BYTES {
                return Err(ProxyHeaderError::Malformed(format!(
                    "invalid v1 line {:?}",
                    String::from_utf8_lossy(&bytes[..n.min(V1_MAX_BYTES)])
                )));
            }
        }
        return Ok(None);
    }
    match result {
        HeaderResult::V2(Ok(header)) => {
            let len = header.len();
            let proxied = match header.command {
                v2::Command::Local => Proxied::Local,
                v2::Command::Proxy => match header.addresses {
                    v2::Addresses::IPv4(a) => Proxied::Client(SocketAddr::new(
                        IpAddr::V4(a.source_address),
                        a.source_port,
                    )),
                    v2::Addresses::IPv6(a) => Proxied::Client(SocketAddr::new(
                        IpAddr::V6(a.source_address),
                        a.source_port,
                    )),
                    _ => Proxied::Unknown,
                },
            };
            Ok(Some((proxied, len)))
        }
        HeaderResult::V1(Ok(header)) => {
            let len = header.header.len();
            let proxied = match header.addresses {
                v1::Addresses::Tcp4(a) => {
                    Proxied::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Proxied::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                v1::Addresses::Unknown => Proxied::Unknown,
            };
            Ok(Some((proxied, len)))
        }
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Malformed(e.to_string())),
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: v2::Command, from: &str) -> Vec<u8> {
        let source: SocketAddr = from.parse().expect("test addr");
        let dest: SocketAddr = "127.0.0.1:9455".parse().expect("test addr");
        let version_command = match command {
            v2::Command::Local => 0x20,
            v2::Command::Proxy => 0x21,
        };
        v2::Builder::with_addresses(version_command, v2::Protocol::Stream, (source, dest))
            .build()
            .expect("builds")
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let rows: &[(&str, Proxied)] = &[
            (
                "PROXY TCP4 100.109.225.7 127.0.0.1 40000 9455\r\n",
                Proxied::Client("100.109.225.7:40000".parse().unwrap()),
            ),
            (
                "PROXY TCP6 2001:db8::1 ::1 40000 9455\r\n",
                Proxied::Client("[2001:db8::1]:40000".parse().unwrap()),
            ),
            ("PROXY UNKNOWN\r\n", Proxied::Unknown),
        ];
        for (text, want) in rows {
            let mut bytes = text.as_bytes().to_vec();
            bytes.extend_from_slice(b"\x80\x01rest");
            let (got, len) = parse(&bytes).expect("parses").expect("complete");
            assert_eq!(got, *want, "{text}");
            assert_eq!(len, text.len(), "{text}");
        }
    }

    #[test]
    fn v2_proxy_and_local() {
        let header = v2_header(v2::Command::Proxy, "100.64.3.4:1234");
        let (got, len) = parse(&header).expect("parses").expect("complete");
        assert_eq!(got, Proxied::Client("100.64.3.4:1234".parse().unwrap()));
        assert_eq!(len, header.len());
        let local = v2_header(v2::Command::Local, "0.0.0.0:0");
        assert_eq!(
            parse(&local).expect("parses").expect("complete").0,
            Proxied::Local
        );
    }

    #[test]
    fn partial_needs_more_and_garbage_is_refused_at_once() {
        let header = v2_header(v2::Command::Proxy, "10.0.0.1:1");
        for cut in [1, 5, 12, 15, header.len() - 1] {
            assert!(
                parse(&header[..cut]).expect("prefix is fine").is_none(),
                "cut {cut}"
            );
        }
        assert!(parse(b"PROXY TCP4 1.2.3.4").expect("prefix").is_none());
        for bad in [
            &b"\x80\x01\x00\x01"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 nonsense here\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn reads_the_header_and_keeps_what_follows() {
        let mut bytes = v2_header(v2::Command::Proxy, "100.64.3.4:1234");
        bytes.extend_from_slice(b"after");
        let mut reader = &bytes[..];
        let mut buf = BytesMut::new();
        let got = read_proxy_header(&mut reader, &mut buf, Duration::from_secs(1))
            .await
            .expect("reads");
        assert_eq!(got, Proxied::Client("100.64.3.4:1234".parse().unwrap()));
        assert_eq!(&buf[..], b"after");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (mut client, _server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let err = read_proxy_header(&mut client, &mut buf, Duration::from_millis(20))
            .await
            .expect_err("times out");
        assert!(matches!(err, ProxyHeaderError::Timeout(_)), "{err}");
    }
}
