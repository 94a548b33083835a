//! The OSS storage path of the upload handler against a minimal in-process
//! OSS stand-in on 127.0.0.1 (path-style addressing, since there is no DNS
//! for `<bucket>.127.0.0.1`). The stand-in does not check signatures — the
//! e2e suite's fake OSS does that — it exists to drive the handler's own
//! logic: Content-Type on the object, duplicate detection by size and ETag,
//! the ETag/MD5 integrity check (and removal of a bad object), storage errors
//! after retries, and readiness.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use uploader::config::Config;
use uploader::handler::Handler;
use uploader::metrics::Metrics;
use uploader::storage::{OssCredentials, Storage};
use uploader_idl::{UploadRequest, ERROR_INTEGRITY, ERROR_STORAGE_UNAVAILABLE};

const BUCKET: &str = "pics";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0oss";

#[derive(Default)]
struct State {
    objects: Mutex<HashMap<String, (Vec<u8>, String)>>,
    requests: Mutex<Vec<(Method, String)>>,
    corrupt_etag: AtomicBool,
    failing: AtomicBool,
    puts: AtomicUsize,
}

impl State {
    fn count(&self, method: &Method) -> usize {
        self.requests
            .lock()
            .map(|r| r.iter().filter(|(m, _)| m == method).count())
            .unwrap_or(0)
    }
}

fn etag(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode_upper(Md5::digest(data)))
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    if let Ok(mut r) = state.requests.lock() {
        r.push((method.clone(), path.clone()));
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    fn reply(
        status: StatusCode,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        for (k, v) in headers {
            r.headers_mut().insert(*k, v.parse().expect("header value"));
        }
        r
    }
    if state.failing.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, &[], Vec::new());
    }
    let Some(rest) = path.strip_prefix(&format!("/{BUCKET}")) else {
        return reply(StatusCode::NOT_FOUND, &[], b"NoSuchBucket".to_vec());
    };
    let key = rest.trim_start_matches('/').to_string();
    let mut objects = state.objects.lock().expect("objects");
    match method {
        Method::GET if key.is_empty() && query.contains("list-type=2") => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>{BUCKET}</Name><Prefix></Prefix><MaxKeys>1</MaxKeys><Delimiter>/</Delimiter><IsTruncated>false</IsTruncated></ListBucketResult>"
            );
            reply(StatusCode::OK, &[], xml.into_bytes())
        }
        Method::PUT => {
            state.puts.fetch_add(1, Ordering::SeqCst);
            let tag = if state.corrupt_etag.load(Ordering::SeqCst) {
                etag(b"something else")
            } else {
                etag(&body)
            };
            objects.insert(key, (body, content_type));
            reply(StatusCode::OK, &[("etag", tag)], Vec::new())
        }
        Method::HEAD => match objects.get(&key) {
            Some((data, ct)) => reply(
                StatusCode::OK,
                &[
                    ("content-length", data.len().to_string()),
                    ("content-type", ct.clone()),
                    ("etag", etag(data)),
                ],
                Vec::new(),
            ),
            None => reply(StatusCode::NOT_FOUND, &[], Vec::new()),
        },
        Method::DELETE => {
            objects.remove(&key);
            reply(StatusCode::NO_CONTENT, &[], Vec::new())
        }
        _ => reply(StatusCode::NOT_FOUND, &[], Vec::new()),
    }
}

async fn start_fake(state: Arc<State>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(answer(state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    state: Arc<State>,
    storage: Storage,
    handler: Handler,
    metrics: Metrics,
}

fn setup(retries: usize) -> Setup {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let state = Arc::new(State::default());
    let addr = runtime.block_on(start_fake(Arc::clone(&state)));
    let text = format!(
        "[storage]\nkind = \"oss\"\nendpoint = \"http://{addr}\"\nbucket = \"{BUCKET}\"\naddressing_style = \"path\"\ntimeout = \"5s\"\nretries = {retries}\n"
    );
    let config = Config::parse(&text).expect("config");
    let storage =
        Storage::new(&config.storage, Some(OssCredentials::new("ak", "sk"))).expect("storage");
    let metrics = Metrics::new(1);
    let handler = Handler::new(
        storage.clone(),
        metrics.clone(),
        runtime.handle().clone(),
        1024,
        "images".to_string(),
    );
    Setup {
        runtime,
        state,
        storage,
        handler,
        metrics,
    }
}

fn upload(handler: &Handler) -> Result<uploader_idl::UploadResult, uploader_idl::UploadError> {
    handler.upload(UploadRequest::new(PNG.to_vec(), None, None))
}

#[test]
fn stores_with_content_type_and_skips_duplicates() {
    let s = setup(0);
    let result = upload(&s.handler).expect("stored");
    assert_eq!(
        result.url,
        format!("{}{}", s.storage.public_base_url(), result.key)
    );
    assert!(s
        .storage
        .public_base_url()
        .ends_with(&format!("/{BUCKET}/")));
    let (data, ct) = s
        .state
        .objects
        .lock()
        .expect("objects")
        .get(&result.key)
        .cloned()
        .expect("object stored");
    assert_eq!((data.as_slice(), ct.as_str()), (PNG, "image/png"));

    let again = upload(&s.handler).expect("duplicate");
    assert_eq!(again.key, result.key);
    assert_eq!(s.state.puts.load(Ordering::SeqCst), 1, "no second PUT");
    let text = s.metrics.render();
    assert!(
        text.contains("uploader_uploads_total{outcome=\"duplicate\"} 1"),
        "{text}"
    );
    assert!(s.runtime.block_on(s.storage.check()).is_ok());
}

#[test]
fn a_digest_mismatch_is_an_integrity_error_and_leaves_no_object() {
    let s = setup(0);
    s.state.corrupt_etag.store(true, Ordering::SeqCst);
    let err = upload(&s.handler).expect_err("integrity");
    assert_eq!(err.code, ERROR_INTEGRITY, "{}", err.message);
    assert!(s.state.objects.lock().expect("objects").is_empty());
    assert_eq!(s.state.count(&Method::DELETE), 1);

    // A retry once the store behaves stores the object.
    s.state.corrupt_etag.store(false, Ordering::SeqCst);
    upload(&s.handler).expect("retry succeeds");
}

#[test]
fn a_failing_store_is_storage_unavailable_after_retries() {
    let s = setup(2);
    s.state.failing.store(true, Ordering::SeqCst);
    let err = upload(&s.handler).expect_err("unavailable");
    assert_eq!(err.code, ERROR_STORAGE_UNAVAILABLE, "{}", err.message);
    // The existence check is tried 1 + retries times before giving up.
    assert_eq!(s.state.count(&Method::HEAD), 3);
    assert!(s.runtime.block_on(s.storage.check()).is_err());
    let text = s.metrics.render();
    assert!(
        text.contains("uploader_uploads_total{outcome=\"storage_error\"} 1"),
        "{text}"
    );
}
