//! Protocol detection: what a new connection is, from its first bytes.
//!
//! One bounded wait (`timeouts.first_byte`) decides everything: a load
//! balancer's TCP check connects and goes away (or stays silent) without a
//! byte, an HTTP health check sends a request line, a Thrift client sends a
//! message header. This is the step the incident lacked: the backend's worker
//! blocked on `read()` of a probe that never spoke. Here a silent connection
//! costs a small buffer and a timer, then it is closed. Like linkerd's
//! detection it is a plain async function returning an enum; the bytes read
//! stay in the caller's buffer to be replayed downstream.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::metrics::Ending;
use crate::protocols::thrift::{sniff, Flavor, MessageHeader, Sniff};

/// More than any HTTP request line start or Thrift header needs to be told
/// apart; a peer that has not made itself clear by then is not speaking a
/// protocol we serve.
const MAX_DETECT_BYTES: usize = 1024;

/// Bytes asked for per read while detecting: more than a health check's
/// request line or a Thrift call's header needs.
pub const FIRST_READ_BYTES: usize = 256;

/// HTTP methods with the space that follows them on a request line.
const HTTP_METHODS: [&[u8]; 10] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
    b"PRI ",
];

/// What the first bytes said.
#[derive(Debug)]
pub enum Detected {
    /// Nothing was sent: a health probe, ended as given.
    Probe(Ending),
    /// An HTTP request starts in the buffer.
    Http,
    /// A Thrift call starts in the buffer.
    Thrift {
        flavor: Flavor,
        header: MessageHeader,
    },
    /// Something else; close without reading further, counted by `reason`.
    Reject(&'static str),
}

/// Reads into `buf` until its start is recognised, for at most `first_byte`
/// in total (a peer trickling a byte at a time gets no more).
pub async fn detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    first_byte: Duration,
    max_frame_bytes: usize,
) -> Detected {
    let deadline = Instant::now() + first_byte;
    loop {
        if !buf.is_empty() {
            if let Some(detected) = recognise(buf, max_frame_bytes) {
                return detected;
            }
            if buf.len() >= MAX_DETECT_BYTES {
                return Detected::Reject("garbage");
            }
        }
        buf.reserve(FIRST_READ_BYTES);
        let nothing_before = buf.is_empty();
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Err(_elapsed) if nothing_before => return Detected::Probe(Ending::Timeout),
            Err(_elapsed) => return Detected::Reject("first_bytes_timeout"),
            Ok(read) => {
                if let Some(ended) = read_ended(read, nothing_before) {
                    return ended;
                }
            }
        }
    }
}

/// What a read says of a connection that it found ended (`None`: it read
/// bytes). `nothing_before`: no byte had arrived before this read, so the
/// peer was a probe.
pub fn read_ended(read: io::Result<usize>, nothing_before: bool) -> Option<Detected> {
    match read {
        Ok(0) if nothing_before => Some(Detected::Probe(Ending::Fin)),
        Err(e) if nothing_before && is_reset(&e) => Some(Detected::Probe(Ending::Rst)),
        Ok(0) | Err(_) => Some(Detected::Reject("garbage")),
        Ok(_) => None,
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Decides from the bytes so far, or `None` to read more.
pub fn recognise(buf: &[u8], max_frame_bytes: usize) -> Option<Detected> {
    match http_prefix(buf) {
        Prefix::Yes => return Some(Detected::Http),
        Prefix::Maybe => return None,
        Prefix::No => {}
    }
    if buf.starts_with(&[0x16, 0x03]) {
        return Some(Detected::Reject("tls"));
    }
    match starts(buf, b"SSH-") {
        Prefix::Yes => return Some(Detected::Reject("ssh")),
        Prefix::Maybe => return None,
        Prefix::No => {}
    }
    match sniff(buf, max_frame_bytes) {
        Sniff::NeedMore => None,
        Sniff::Thrift { flavor, header } => Some(Detected::Thrift { flavor, header }),
        Sniff::Invalid(invalid) => {
            let reason = invalid.reason();
            // A header that fails to decode is only "bad Thrift" when the
            // bytes claimed to be Thrift; anything else is plain garbage.
            if reason == "bad_thrift" && !claims_thrift(buf) {
                Some(Detected::Reject("garbage"))
            } else {
                Some(Detected::Reject(reason))
            }
        }
    }
}

fn claims_thrift(buf: &[u8]) -> bool {
    matches!(buf.first(), Some(0x80 | 0x82)) || matches!(buf.get(4), Some(0x80 | 0x82))
}

enum Prefix {
    Yes,
    Maybe,
    No,
}

fn starts(buf: &[u8], token: &[u8]) -> Prefix {
    if buf.len() >= token.len() {
        if buf.starts_with(token) {
            Prefix::Yes
        } else {
            Prefix::No
        }
    } else if token.starts_with(buf) {
        Prefix::Maybe
    } else {
        Prefix::No
    }
}

/// Whether detection takes `buf` for HTTP: a known method at byte 0. Only
/// the method is looked at, so it is cheap on any bytes.
pub fn starts_as_http(buf: &[u8]) -> bool {
    matches!(http_prefix(buf), Prefix::Yes)
}

fn http_prefix(buf: &[u8]) -> Prefix {
    let mut maybe = false;
    for token in HTTP_METHODS {
        match starts(buf, token) {
            Prefix::Yes => return Prefix::Yes,
            Prefix::Maybe => maybe = true,
            Prefix::No => {}
        }
    }
    if maybe {
        Prefix::Maybe
    } else {
        Prefix::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    fn framed_ping() -> Vec<u8> {
        // A framed strict-binary `ping` call, seqid 1, empty args.
        let mut body = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4];
        body.extend_from_slice(b"ping");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.push(0); // stop
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        framed
    }

    fn label(d: &Option<Detected>) -> String {
        match d {
            None => "more".to_string(),
            Some(Detected::Probe(e)) => format!("probe:{}", e.label()),
            Some(Detected::Http) => "http".to_string(),
            Some(Detected::Thrift { flavor, header }) => format!("thrift:{flavor}:{}", header.name),
            Some(Detected::Reject(r)) => format!("reject:{r}"),
        }
    }

    #[test]
    fn recognises_first_bytes() {
        let ping = framed_ping();
        let rows: &[(&[u8], &str)] = &[
            (b"GET /health HTTP/1.1\r\n", "http"),
            (b"HEAD / HTTP/1.0\r\n", "http"),
            (b"GE", "more"),
            (b"HEA", "more"),
            (b"\x16\x03\x01\x02\x00\x01", "reject:tls"),
            (b"SSH-2.0-OpenSSH_9.2\r\n", "reject:ssh"),
            (b"SS", "more"),
            (&ping, "thrift:framed+binary:ping"),
            (&ping[..6], "more"),
            (
                &[0x7f, 0xff, 0xff, 0xff, 0x80, 0x01],
                "reject:frame_too_large",
            ),
            (b"\x00\x00\x00\x10\x0f\xff\x00\x00", "reject:theader"),
            (
                b"\x00\x00\x00\x04ping\x01\x00\x00\x00\x01",
                "reject:non_strict_binary",
            ),
            // ASCII read as a frame length is far beyond any limit
            (b"hello there, general", "reject:frame_too_large"),
            (b"\x00\x00\x00\x09\x41\x42\xff\x00\x01", "reject:garbage"),
            (b"\x80\x01\x00\x07", "reject:bad_thrift"),
        ];
        for (bytes, want) in rows {
            assert_eq!(label(&recognise(bytes, 16_384_000)), *want, "{bytes:02x?}");
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    async fn detect_on(server: &mut TcpStream, first_byte: Duration) -> (Detected, BytesMut) {
        let mut buf = BytesMut::new();
        let detected = detect(server, &mut buf, first_byte, 16_384_000).await;
        (detected, buf)
    }

    #[tokio::test]
    async fn endings_of_silent_connections() {
        let (client, mut server) = pair().await;
        drop(client);
        let (d, _) = detect_on(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(d, Detected::Probe(Ending::Fin)), "{d:?}");

        let (client, mut server) = pair().await;
        client.set_zero_linger().expect("linger");
        drop(client);
        let (d, _) = detect_on(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(d, Detected::Probe(Ending::Rst)), "{d:?}");

        let (_client, mut server) = pair().await;
        let (d, _) = detect_on(&mut server, Duration::from_millis(50)).await;
        assert!(matches!(d, Detected::Probe(Ending::Timeout)), "{d:?}");
    }

    #[tokio::test]
    async fn thrift_is_kept_in_the_buffer_even_when_split() {
        let (mut client, mut server) = pair().await;
        let ping = framed_ping();
        client.write_all(&ping[..3]).await.expect("write");
        let (d, buf) = tokio::join!(detect_on(&mut server, Duration::from_secs(5)), async {
            tokio::task::yield_now().await;
            client.write_all(&ping[3..]).await.expect("write");
        })
        .0;
        assert!(matches!(d, Detected::Thrift { .. }), "{d:?}");
        assert_eq!(&buf[..], &ping[..]);
    }

    #[tokio::test]
    async fn a_trickle_ends_at_first_byte() {
        let (mut client, mut server) = pair().await;
        client.write_all(&[0, 0]).await.expect("write");
        let (d, _) = detect_on(&mut server, Duration::from_millis(100)).await;
        assert!(
            matches!(d, Detected::Reject("first_bytes_timeout")),
            "{d:?}"
        );
    }
}
