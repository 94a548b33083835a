//! HTTP health requests answered in the accept loop.
//!
//! A load balancer's HTTP check connects, sends one `HEAD` or `GET` and
//! wants the connection closed after the answer (Aliyun's is HTTP/1.0). By
//! the time probegate accepts it, the request is usually in the socket
//! already, and the accept loop's first read ([`first_look`]) holds it
//! whole. Such a request is answered right there, with the same answer
//! (and the same counting) as [`HealthAnswers::decide`] gives a request
//! served by hyper, written as hyper writes it, and the connection closed:
//! no epoll registration, no task, no hyper connection. Only bytes that
//! detection takes for HTTP qualify ([`starts_as_http`]: a known method at
//! byte 0), so nothing is answered here that the usual path would have closed
//! unanswered. Anything else takes the usual path: a request not yet
//! complete, one that keeps the connection alive, one with a body or an
//! `Expect`/`Upgrade` header, more bytes after the request, a `Connection`
//! header hyper would not read (not ASCII).
//!
//! [`starts_as_http`]: crate::detect::starts_as_http
//!
//! [`first_look`]: crate::listeners::accept::first_look
//! [`HealthAnswers::decide`]: crate::protocols::http_health::HealthAnswers::decide

use std::fmt::Write as _;
use std::time::SystemTime;

use hyper::{Method, Uri, Version};

use crate::detect::starts_as_http;
use crate::protocols::http_health::{HealthAnswer, CACHE_CONTROL_VALUE, CONTENT_TYPE_VALUE};

/// Headers looked at in a request; one with more takes the usual path.
const MAX_HEADERS: usize = 24;

/// A request that arrived whole with its connection and asks for the
/// connection to be closed after the answer.
#[derive(Debug)]
pub struct OneShot {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
}

/// `Some` when `buf` is exactly one complete request head, without a body,
/// that asks to close the connection: HTTP/1.0 without `keep-alive`, or
/// `Connection: close`.
pub fn one_shot(buf: &[u8]) -> Option<OneShot> {
    // Checked first: every Thrift client's first bytes pass through here,
    // and only the method is looked at, not a Thrift header.
    if !starts_as_http(buf) {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) if length == buf.len() => {}
        _ => return None,
    }
    let version = match request.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let (mut close, mut keep_alive) = (false, false);
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            // hyper ignores a value that is not visible ASCII.
            if !header.value.is_ascii() {
                return None;
            }
            for token in std::str::from_utf8(header.value).ok()?.split(',') {
                let token = token.trim();
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if std::str::from_utf8(header.value).ok()?.trim() != "0" {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        }
    }
    let closes = close || (version == Version::HTTP_10 && !keep_alive);
    if !closes {
        return None;
    }
    Some(OneShot {
        method: Method::from_bytes(request.method?.as_bytes()).ok()?,
        uri: request.path?.parse().ok()?,
        version,
    })
}

/// `answer` to `request`, byte for byte as hyper's HTTP/1 server writes it
/// on a connection the request asked to close (the `date` aside, which is
/// the time of writing).
pub fn encode(answer: &HealthAnswer, request: &OneShot) -> Vec<u8> {
    let head_only = request.method == Method::HEAD;
    let version = if request.version == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let mut text = String::with_capacity(256);
    let _ = write!(
        text,
        "{version} {} {}\r\ncontent-type: {CONTENT_TYPE_VALUE}\r\ncache-control: {CACHE_CONTROL_VALUE}\r\n",
        answer.status.as_str(),
        answer.status.canonical_reason().unwrap_or(""),
    );
    // hyper says `connection: close` when the answer closes, and on
    // HTTP/1.1 when the request asked to; HTTP/1.0 closes by default.
    if answer.close || request.version == Version::HTTP_11 {
        text.push_str("connection: close\r\n");
    }
    if !head_only {
        let _ = write!(text, "content-length: {}\r\n", answer.body.len());
    }
    let _ = write!(
        text,
        "date: {}\r\n\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    );
    if !head_only {
        text.push_str(&answer.body);
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::http_health::HealthAnswer;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, StatusCode};
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request's bytes, and the method and path when it is one-shot.
    type Case = (&'static [u8], Option<(&'static str, &'static str)>);

    #[test]
    fn only_whole_requests_that_close_are_answered_at_accept() {
        let cases: &[Case] = &[
            (b"HEAD /health HTTP/1.0\r\n\r\n", Some(("HEAD", "/health"))),
            (
                b"GET /health?from=slb HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
                Some(("GET", "/health")),
            ),
            (
                b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                Some(("GET", "/health")),
            ),
            (
                b"HEAD /health HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
                Some(("HEAD", "/health")),
            ),
            (
                b"GET /health HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
                Some(("GET", "/health")),
            ),
            (b"GET /nope HTTP/1.0\r\n\r\n", Some(("GET", "/nope"))),
            (b"POST /health HTTP/1.0\r\n\r\n", Some(("POST", "/health"))),
            // Kept alive: hyper serves the connection.
            (b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n", None),
            (
                b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                None,
            ),
            // Not whole, or more than one request head.
            (b"HEAD /health HTTP/1.0\r\n", None),
            (b"HEAD /health HTTP/1.0\r\n\r\nGET", None),
            // A body, or headers hyper acts on.
            (b"POST /health HTTP/1.0\r\nContent-Length: 2\r\n\r\n", None),
            (
                b"POST /health HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                None,
            ),
            (
                b"GET /health HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
                None,
            ),
            (b"GET /health HTTP/1.0\r\nUpgrade: h2c\r\n\r\n", None),
            // Not HTTP/1.x as hyper parses it.
            (b"GET /health HTTP/2.0\r\n\r\n", None),
            (b"HEAD\r\n\r\n", None),
            // Not HTTP to detection: the usual path closes these unanswered.
            (b"FOO /health HTTP/1.0\r\n\r\n", None),
            (b"get /health HTTP/1.0\r\n\r\n", None),
            (b"\r\nGET /health HTTP/1.0\r\n\r\n", None),
            // A Connection value hyper would not read.
            (
                "GET /health HTTP/1.1\r\nConnection: close, \u{fc}\r\n\r\n".as_bytes(),
                None,
            ),
        ];
        for (bytes, expected) in cases {
            let got = one_shot(bytes).map(|r| (r.method.to_string(), r.uri.path().to_string()));
            let expected = expected.map(|(m, p)| (m.to_string(), p.to_string()));
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    /// What hyper, configured as `serve_http` configures it, writes for
    /// `answer` to `request` on a connection that then closes.
    async fn hyper_writes(request: &'static [u8], answer: HealthAnswer) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(4096);
        let service = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
            let response: hyper::Response<Full<Bytes>> = answer.clone().into_response(r.method());
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .serve_connection(TokioIo::new(server), service);
        let served = tokio::spawn(connection);
        client.write_all(request).await.expect("write");
        let mut written = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut written),
        )
        .await
        .expect("hyper closes the connection the request asked to close")
        .expect("read");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), served).await;
        written
    }

    fn without_date(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn answers_are_written_byte_for_byte_as_hyper_writes_them() {
        let ok = HealthAnswer::new(StatusCode::OK, "ok: 1/1 backends up\n");
        let down = HealthAnswer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable: 0/1 backends up\n",
        );
        let not_allowed =
            HealthAnswer::new(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n").closing();
        let not_found = HealthAnswer::new(
            StatusCode::NOT_FOUND,
            "not found: only health paths are served here\n",
        )
        .closing();
        let requests: [&'static [u8]; 4] = [
            b"HEAD /health HTTP/1.0\r\n\r\n",
            b"GET /health HTTP/1.0\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"HEAD /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ];
        for answer in [ok, down, not_found, not_allowed] {
            for request in requests {
                let ours = encode(&answer, &one_shot(request).expect("one-shot"));
                let hypers = hyper_writes(request, answer.clone()).await;
                assert_eq!(
                    without_date(&ours),
                    without_date(&hypers),
                    "{:?} answered {:?}",
                    String::from_utf8_lossy(request),
                    answer.status
                );
                let date = |b: &[u8]| String::from_utf8_lossy(b).contains("\r\ndate: ");
                assert!(date(&ours) && date(&hypers));
            }
        }
    }
}
