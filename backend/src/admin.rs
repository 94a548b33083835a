//! The admin HTTP listener: metrics, liveness, readiness and (fs mode) the
//! stored objects themselves.
//!
//! `/live` says the process runs; `/ready` says it can serve uploads now,
//! which for this service means the object store answers. Readiness is cached
//! briefly so that a scraper or health checker polling it cannot turn into
//! load on the store. In fs mode the returned URLs point here
//! (`/objects/<key>`), so an uploaded image can be fetched back without any
//! other web server; only plain keys are served, read-only.
//!
//! Routing is a plain `match` in `route`, callable from tests without a
//! socket; `serve` is the hyper plumbing around it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::StorageKind;
use crate::image::ImageKind;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// How long a readiness answer is reused.
const READY_CACHE: Duration = Duration::from_secs(2);

/// Everything the admin routes read.
#[derive(Debug)]
pub struct Admin {
    storage: Storage,
    metrics: Metrics,
    /// The last readiness check: when it ran and what it found.
    ready: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

type HttpResponse = Response<Full<Bytes>>;

impl Admin {
    pub fn new(storage: Storage, metrics: Metrics) -> Self {
        Admin {
            storage,
            metrics,
            ready: tokio::sync::Mutex::new(None),
        }
    }

    /// Answers one request. `path` excludes the query string.
    pub async fn route(&self, method: &Method, path: &str) -> HttpResponse {
        let readable = method == Method::GET || method == Method::HEAD;
        let response = match path {
            "/metrics" | "/live" | "/ready" if !readable => {
                text(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n")
            }
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.metrics.render());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" => match self.readiness().await {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: storage: {reason}\n"),
                ),
            },
            _ => match path.strip_prefix("/objects/") {
                Some(key) if self.storage.kind() == StorageKind::Fs => {
                    if !readable {
                        text(StatusCode::METHOD_NOT_ALLOWED, "objects are read-only\n")
                    } else {
                        self.object(key).await
                    }
                }
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        };
        if method == Method::HEAD {
            // Keep the headers (with the GET body's length), drop the body.
            let (mut parts, body) = response.into_parts();
            let len = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            return Response::from_parts(parts, Full::new(Bytes::new()));
        }
        response
    }

    async fn readiness(&self) -> Result<(), String> {
        let mut cached = self.ready.lock().await;
        if let Some((at, result)) = &*cached {
            if at.elapsed() < READY_CACHE {
                return result.clone();
            }
        }
        let result = self.storage.check().await;
        if let Err(reason) = &result {
            tracing::debug!(reason = %reason, "not ready");
        }
        *cached = Some((Instant::now(), result.clone()));
        result
    }

    async fn object(&self, key: &str) -> HttpResponse {
        if !is_plain_key(key) {
            return text(
                StatusCode::BAD_REQUEST,
                "object keys are relative paths of plain segments\n",
            );
        }
        match self.storage.read(key).await {
            Ok(Some(data)) => {
                let kind = key
                    .rsplit_once('.')
                    .and_then(|(_, ext)| ImageKind::from_extension(ext));
                let content_type = kind.map_or("application/octet-stream", ImageKind::mime);
                let mut r = Response::new(Full::new(Bytes::from(data)));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            Ok(None) => text(StatusCode::NOT_FOUND, "no such object\n"),
            Err(e) => {
                tracing::warn!(key, error = %e, "reading a stored object failed");
                text(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}\n"))
            }
        }
    }
}

/// Rejects absolute paths, `..`, hidden segments (the atomic-write directory
/// lives under the root as `.uploading`), empty segments and backslashes.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && !key.contains('\\')
        && !key.contains('%')
        && key
            .split('/')
            .all(|segment| !segment.is_empty() && !segment.starts_with('.'))
}

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves the admin routes on `listener` until `shutdown` turns true.
/// `header_timeout` bounds how long a client may take to send its headers.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                continue;
            }
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let admin = Arc::clone(&admin);
                async move {
                    let response = admin.route(req.method(), req.uri().path()).await;
                    Ok::<_, Infallible>(response)
                }
            });
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    use crate::config::Config;

    struct Fixture {
        admin: Admin,
        root: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn fixture(name: &str) -> Fixture {
        let root =
            std::env::temp_dir().join(format!("uploader-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let config = Config::parse(&format!(
            "[storage]\nroot = {:?}\n",
            root.display().to_string()
        ))
        .expect("config");
        let storage = Storage::new(&config.storage, None).expect("storage");
        let metrics = Metrics::new(3);
        metrics.connections_accepted.inc();
        Fixture {
            admin: Admin::new(storage, metrics),
            root,
        }
    }

    async fn get(
        admin: &Admin,
        method: Method,
        path: &str,
    ) -> (StatusCode, Option<String>, Vec<u8>) {
        let response = admin.route(&method, path).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        (status, content_type, body)
    }

    #[tokio::test]
    async fn operator_routes() {
        let f = fixture("routes");
        let (status, ct, body) = get(&f.admin, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ct
            .unwrap_or_default()
            .starts_with("text/plain; version=0.0.4"));
        let body = String::from_utf8(body).expect("utf-8");
        assert!(
            body.contains("uploader_connections_accepted_total 1"),
            "{body}"
        );
        assert!(body.contains("uploader_workers 3"), "{body}");

        assert_eq!(get(&f.admin, Method::GET, "/live").await.0, StatusCode::OK);
        assert_eq!(get(&f.admin, Method::GET, "/ready").await.0, StatusCode::OK);
        assert_eq!(
            get(&f.admin, Method::GET, "/nope").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&f.admin, Method::POST, "/metrics").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn ready_reports_an_unreachable_store() {
        let f = fixture("unready");
        // The root replaced by a regular file: listing it fails.
        std::fs::remove_dir_all(&f.root).expect("remove root");
        std::fs::write(&f.root, b"not a directory").expect("file in its place");
        let (status, _, body) = get(&f.admin, Method::GET, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&body).starts_with("not ready: storage:"));
        let _ = std::fs::remove_file(&f.root);
    }

    #[tokio::test]
    async fn objects_are_served_read_only_with_their_type() {
        let f = fixture("objects");
        let key = "images/ab/cd/abcd.png";
        std::fs::create_dir_all(f.root.join("images/ab/cd")).expect("dirs");
        std::fs::write(f.root.join(key), b"\x89PNG-bytes").expect("object");
        std::fs::write(f.root.join(".uploading-secret"), b"hidden").expect("hidden");

        let (status, ct, body) = get(&f.admin, Method::GET, &format!("/objects/{key}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("image/png"));
        assert_eq!(body, b"\x89PNG-bytes");

        let head = f
            .admin
            .route(&Method::HEAD, &format!("/objects/{key}"))
            .await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()),
            Some("10")
        );
        assert_eq!(
            head.into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .len(),
            0
        );

        let cases = [
            ("/objects/images/ab/cd/missing.png", StatusCode::NOT_FOUND),
            ("/objects/images/ab", StatusCode::NOT_FOUND),
            ("/objects/../etc/passwd", StatusCode::BAD_REQUEST),
            ("/objects//etc/passwd", StatusCode::BAD_REQUEST),
            ("/objects/images/../../x", StatusCode::BAD_REQUEST),
            ("/objects/.uploading-secret", StatusCode::BAD_REQUEST),
            ("/objects/%2e%2e/x", StatusCode::BAD_REQUEST),
            ("/objects/", StatusCode::BAD_REQUEST),
        ];
        for (path, want) in cases {
            assert_eq!(get(&f.admin, Method::GET, path).await.0, want, "{path}");
        }
        assert_eq!(
            get(&f.admin, Method::PUT, &format!("/objects/{key}"))
                .await
                .0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
