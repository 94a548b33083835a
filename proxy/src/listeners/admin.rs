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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use super::*;
    use crate::config::Config;
    use crate::shutdown::Lifecycle;
    use crate::upstream::Upstream;

    /// An admin state over one backend that has not been checked yet (so it
    /// is not up): no socket is opened.
    fn admin() -> Admin {
        let config = Config::parse("[[backends]]\naddress = \"127.0.0.1:9\"\n").expect("config");
        let registry = Registry::new();
        let metrics = EdgeMetrics::new(&registry, &[]).expect("edge metrics");
        let upstream = Upstream::new(&config, &registry).expect("upstream");
        Admin {
            registry,
            readiness: Readiness {
                upstream: Arc::clone(&upstream),
                lifecycle: Lifecycle::new(metrics.clone()),
            },
            metrics,
        }
    }

    async fn body(response: Response<Full<Bytes>>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn routes() {
        let admin = admin();
        assert_eq!(admin.route(&Method::GET, "/live").status(), StatusCode::OK);

        let ready = admin.route(&Method::GET, "/ready");
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(ready).await.contains("0/1 backends up"));

        let metrics = body(admin.route(&Method::GET, "/metrics")).await;
        for family in [
            "probegate_connections_total",
            "probegate_backend_up",
            "probegate_draining",
        ] {
            assert!(metrics.contains(family), "{family} missing from /metrics");
        }

        let status: serde_json::Value =
            serde_json::from_str(&body(admin.route(&Method::GET, "/status")).await).expect("json");
        assert_eq!(status["ready"], false);
        assert_eq!(status["backends"][0]["address"], "127.0.0.1:9");
        assert!(status["classes"]["probe"]["total"].is_number());

        admin.readiness.lifecycle.start_draining();
        let draining = admin.route(&Method::GET, "/ready");
        assert!(body(draining).await.starts_with("draining"));

        assert_eq!(
            admin.route(&Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            admin.route(&Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
