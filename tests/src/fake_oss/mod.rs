//! A fake Aliyun OSS endpoint for the backend's `oss` storage mode.
//!
//! No OSS-compatible server that checks signatures can be installed here, and
//! a fake that accepts anything would let a broken signer pass. This one
//! recomputes the V1 signature of every request ([`signature`]) and refuses a
//! wrong one with OSS's own 403 `SignatureDoesNotMatch` XML. It checks the
//! bucket, the Content-MD5 when sent, and — since the backend's keys are
//! content-addressed (`.../<sha256>.<ext>`) — that the body's SHA-256 is the
//! one in the key. Objects live in memory.
//!
//! Addressing, all reachable on `127.0.0.1:PORT` with no DNS:
//!
//! - [`Style::Virtual`] (`http://<bucket>.<endpoint host>/<key>`), what
//!   Aliyun requires and the backend's default. Nothing here resolves
//!   `<bucket>.oss-fake.invalid`, so the client is pointed at the fake as its
//!   HTTP proxy (`HTTP_PROXY`, honoured by reqwest, OpenDAL's HTTP client):
//!   the request keeps its virtual-host URL and `Host`, which the fake reads
//!   the bucket from. This is the "DNS override" of the issue, done one layer
//!   up, and it leaves what is signed exactly as in production.
//! - [`Style::Path`] (`/bucket/key`).
//! - [`Style::Cname`] (the endpoint is bound to the bucket: `/key`).
//!
//! Switches make it fail on purpose: [`FakeOss::fail_next`] (503s),
//! [`FakeOss::set_failing`] and [`FakeOss::set_corrupt_etag`] (a wrong ETag
//! on PUT), so storage-error and integrity paths can be tested.

mod handler;
pub mod signature;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// The endpoint the backend is given for [`Style::Virtual`]: `.invalid`
/// never resolves (RFC 2606), so without the proxy nothing is sent anywhere.
pub const VIRTUAL_ENDPOINT: &str = "http://oss-fake.invalid";

/// How the bucket is named in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `http://bucket.endpoint/key`, reached through the fake as HTTP proxy.
    Virtual,
    /// `http://endpoint/bucket/key`.
    Path,
    /// `http://endpoint/key`, the endpoint bound to the bucket (OSS "CNAME").
    Cname,
}

impl Style {
    /// The value of the backend's `storage.addressing_style` for this style.
    pub fn config_value(self) -> &'static str {
        match self {
            Style::Virtual => "virtual",
            Style::Path => "path",
            Style::Cname => "cname",
        }
    }
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct Object {
    pub data: Vec<u8>,
    pub content_type: String,
    pub last_modified: SystemTime,
}

/// One request as the fake saw and answered it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request path, still percent-encoded.
    pub path: String,
    pub query: String,
    pub status: u16,
    /// The OSS error code answered, if any (`SignatureDoesNotMatch`, ...).
    pub error: Option<String>,
    /// The string the fake expected to be signed, when it checked a signature.
    pub string_to_sign: Option<String>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
}

#[derive(Debug)]
struct Config {
    bucket: String,
    access_key_id: String,
    secret: String,
    style: Style,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Object>,
    log: Vec<Recorded>,
    fail_next: u64,
    failing: bool,
    corrupt_etag: bool,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test;
        // keep serving so the test reports its own failure.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake OSS on `127.0.0.1:<ephemeral>`; stops on drop.
pub struct FakeOss {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeOss {
    /// Starts a path-style fake serving one bucket with one key pair.
    pub fn start(bucket: &str, access_key_id: &str, secret: &str) -> FakeOss {
        FakeOss::start_with_style(bucket, access_key_id, secret, Style::Path)
    }

    pub fn start_with_style(
        bucket: &str,
        access_key_id: &str,
        secret: &str,
        style: Style,
    ) -> FakeOss {
        let shared = Arc::new(Shared {
            config: Config {
                bucket: bucket.to_string(),
                access_key_id: access_key_id.to_string(),
                secret: secret.to_string(),
                style,
            },
            state: Mutex::new(State::default()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local_addr");
        let (stop, stopped) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fake-oss".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the fake OSS");
                runtime.block_on(serve(listener, serving, stopped));
            })
            .expect("spawn fake OSS thread");
        FakeOss {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The backend's `storage.endpoint` for this fake's style: for
    /// [`Style::Virtual`] [`VIRTUAL_ENDPOINT`] (reached through
    /// [`FakeOss::proxy_url`]), else `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        match self.shared.config.style {
            Style::Virtual => VIRTUAL_ENDPOINT.to_string(),
            Style::Path | Style::Cname => self.url(),
        }
    }

    /// `http://127.0.0.1:PORT`: where the fake listens (and its proxy URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The value for `HTTP_PROXY` that routes virtual-host requests here.
    pub fn proxy_url(&self) -> String {
        self.url()
    }

    /// `base` pointed at this fake: `storage.kind = "oss"`, endpoint, bucket
    /// and addressing style, the credentials in the environment, and for
    /// [`Style::Virtual`] the fake as the only HTTP proxy.
    pub fn configure(
        &self,
        base: crate::UploaderConfig,
        access_key_id: &str,
        secret: &str,
    ) -> crate::UploaderConfig {
        let style = self.shared.config.style;
        let mut config = base.storage_oss(
            &self.endpoint(),
            self.bucket(),
            style.config_value(),
            access_key_id,
            secret,
        );
        const PROXY_VARS: [&str; 3] = ["http_proxy", "no_proxy", "all_proxy"];
        config
            .env
            .retain(|(k, _)| !PROXY_VARS.iter().any(|v| k.eq_ignore_ascii_case(v)));
        let proxy = match style {
            Style::Virtual => self.proxy_url(),
            Style::Path | Style::Cname => String::new(),
        };
        for name in ["HTTP_PROXY", "http_proxy"] {
            config.env.push((name.to_string(), proxy.clone()));
        }
        // Whatever the machine has set must not reroute or exempt anything.
        for name in ["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"] {
            config.env.push((name.to_string(), String::new()));
        }
        config
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn bucket(&self) -> &str {
        &self.shared.config.bucket
    }

    pub fn style(&self) -> Style {
        self.shared.config.style
    }

    /// The stored object's bytes and Content-Type.
    pub fn object(&self, key: &str) -> Option<(Vec<u8>, String)> {
        self.shared
            .state()
            .objects
            .get(key)
            .map(|o| (o.data.clone(), o.content_type.clone()))
    }

    /// All stored keys.
    pub fn keys(&self) -> Vec<String> {
        self.shared.state().objects.keys().cloned().collect()
    }

    /// Stores an object directly, bypassing HTTP (for read-path tests).
    pub fn insert(&self, key: &str, data: &[u8], content_type: &str) {
        self.shared.state().objects.insert(
            key.to_string(),
            Object {
                data: data.to_vec(),
                content_type: content_type.to_string(),
                last_modified: SystemTime::now(),
            },
        );
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().log.clone()
    }

    /// How many requests had `method` (e.g. `"PUT"`) and `status`.
    pub fn count(&self, method: &str, status: u16) -> usize {
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| r.method == method && r.status == status)
            .count()
    }

    /// How many requests were refused with `SignatureDoesNotMatch`.
    pub fn signature_failures(&self) -> usize {
        self.error_count("SignatureDoesNotMatch")
    }

    /// How many requests were answered with the OSS error `code`.
    pub fn error_count(&self, code: &str) -> usize {
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| r.error.as_deref() == Some(code))
            .count()
    }

    /// Answer the next `n` requests with 503 `ServiceUnavailable`.
    pub fn fail_next(&self, n: u64) {
        self.shared.state().fail_next = n;
    }

    /// Answer every request with 503 until switched off.
    pub fn set_failing(&self, failing: bool) {
        self.shared.state().failing = failing;
    }

    /// Return an ETag that is not the MD5 of the stored bytes on PUT.
    pub fn set_corrupt_etag(&self, corrupt: bool) {
        self.shared.state().corrupt_etag = corrupt;
    }
}

impl Drop for FakeOss {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake OSS: cannot register listener: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { handler::handle(&shared, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}
