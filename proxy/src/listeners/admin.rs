//! The admin listener (loopback by default): `/metrics`, `/live`, `/ready`,
//! `/status`.
//!
//! Operators and Prometheus talk to this port, never the load balancer, so
//! metrics are not exposed to the public side. The router is a plain function
//! of (method, path) so tests can call it without a socket.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::EdgeMetrics;
use crate::status::Readiness;

/// What the admin answers are made of.
#[derive(Clone)]
pub struct Admin {
    pub registry: Registry,
    pub readiness: Readiness,
    pub metrics: EdgeMetrics,
}

impl Admin {
    /// The answer to one admin request.
    pub fn route(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n");
        }
        match path {
            "/metrics" => {
                let mut out = Vec::new();
                match TextEncoder::new().encode(&self.registry.gather(), &mut out) {
                    Ok(()) => {
                        let mut response = Response::new(Full::new(Bytes::from(out)));
                        response.headers_mut().insert(
                            CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        );
                        response
                    }
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("encoding metrics failed: {e}\n"),
                    ),
                }
            }
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" => {
                let verdict = self.readiness.verdict();
                let status = if verdict.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(status, &verdict.reason())
            }
            "/status" => {
                let body = serde_json::to_vec_pretty(&self.readiness.status_json(&self.metrics))
                    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}").into_bytes());
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /live, /ready or /status\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the admin port until `stop` fires. Each connection is bounded by
/// `header_timeout` for its request headers.
pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = admin.route(request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}
