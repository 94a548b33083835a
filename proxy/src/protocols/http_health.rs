//! HTTP health answers on the public port.
//!
//! Load balancers check health over HTTP too (Aliyun sends `HEAD`, and `GET`
//! with User-Agent `KeepAliveClient` on TCP listeners). probegate answers
//! these itself, with the same verdict as `/ready`: 200 when a backend can
//! serve and we are not draining, 503 otherwise, with a one-line reason for
//! GET. Nothing else is served here — in particular not `/metrics`, which
//! lives on the loopback admin port — and a request for any other path is
//! answered 404 and the connection closed. Keep-alive is honoured while the
//! peer keeps asking for health, bounded by `timeouts.idle` of silence. A
//! request that arrives whole and asks to close is answered from the
//! accept loop instead (http_once.rs), with the same [`HealthAnswers::decide`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::metrics::{EdgeMetrics, Ending};
use crate::protocols::replay::{Activity, Replay};
use crate::status::Readiness;

/// What the health answers need to know.
#[derive(Clone)]
pub struct HealthAnswers {
    pub paths: Arc<Vec<String>>,
    pub readiness: Readiness,
    pub metrics: EdgeMetrics,
    pub idle: Duration,
}

/// What to answer one request, before it is written: by hyper on a
/// served connection, or straight from the accept loop (http_once.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthAnswer {
    pub status: StatusCode,
    /// The body of a GET; a HEAD gets none.
    pub body: String,
    /// The connection is closed after this answer, whatever was asked.
    pub close: bool,
}

impl HealthAnswers {
    /// The answer to one request, counted. `source` is the probe source
    /// label.
    pub fn decide(&self, method: &Method, path: &str, source: &str) -> HealthAnswer {
        if !self.paths.iter().any(|p| p == path) {
            self.metrics
                .rejected_total
                .with_label_values(&["http_not_health"])
                .inc();
            return HealthAnswer::new(
                StatusCode::NOT_FOUND,
                "not found: only health paths are served here\n",
            )
            .closing();
        }
        if method != Method::GET && method != Method::HEAD {
            return HealthAnswer::new(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n")
                .closing();
        }
        self.metrics
            .probes_total
            .with_label_values(&[source, Ending::Http.label()])
            .inc();
        let verdict = self.readiness.verdict();
        let status = if verdict.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        HealthAnswer::new(status, verdict.reason())
    }

    /// The answer to one request as hyper's response.
    pub fn answer(&self, method: &Method, path: &str, source: &str) -> Response<Full<Bytes>> {
        self.decide(method, path, source).into_response(method)
    }
}

/// The headers every health answer carries, in the order they are sent.
pub const CONTENT_TYPE_VALUE: &str = "text/plain; charset=utf-8";
pub const CACHE_CONTROL_VALUE: &str = "no-store";

impl HealthAnswer {
    /// An answer that does not itself close the connection (a request that
    /// asks to close still gets it closed); see [`closing`](Self::closing).
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        HealthAnswer {
            status,
            body: body.into(),
            close: false,
        }
    }

    /// The same answer, closing the connection after it is written.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// This answer as hyper's response to a `method` request, the body
    /// moved into it (a HEAD gets none).
    pub fn into_response(self, method: &Method) -> Response<Full<Bytes>> {
        let body = if method == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(self.body)
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_VALUE));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL_VALUE));
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Serves HTTP on a connection whose first bytes (`prefix`) were already
/// read by detection, until the peer closes, asks for something else, or is
/// silent for `idle`.
pub async fn serve_http<S>(stream: S, prefix: BytesMut, source: String, answers: HealthAnswers)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(Replay::new(prefix, stream, activity.clone()));
    let idle = answers.idle;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = answers.answer(request.method(), request.uri().path(), &source);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    loop {
        let idle_until = activity.last() + idle;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "http health connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(idle_until) => {
                if activity.last() + idle <= tokio::time::Instant::now() {
                    debug!(?idle, "closing idle http health connection");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // The answers depend on a live upstream; they are exercised end to end
    // through the public port in tests/tests/proxy_health.rs and in
    // `crate::server` tests. Here: the response shapes.
    use super::*;

    #[test]
    fn head_has_no_body_and_not_found_closes() {
        let head = HealthAnswer::new(StatusCode::OK, "ok\n").into_response(&Method::HEAD);
        assert!(head.headers().get(CONNECTION).is_none());
        let nf = HealthAnswer::new(StatusCode::NOT_FOUND, "nope\n")
            .closing()
            .into_response(&Method::GET);
        assert_eq!(
            nf.headers().get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
    }
}
