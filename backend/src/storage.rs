//! Where images are kept: Apache OpenDAL over a local directory or Aliyun OSS.
//!
//! One `Operator` gives both kinds the same API. Writes go through OpenDAL's
//! timeout and retry layers, so a slow or flapping store costs a bounded
//! amount of a worker's time and then becomes an `UploadError` the client can
//! retry (keys are content-addressed, so retries are always safe). In fs mode
//! every object is written to a temporary file under `<root>/.uploading` and
//! renamed into place after `fsync`, so a crash never leaves a partial object
//! visible. In OSS mode the ETag of a simple PUT is the MD5 of the body, which
//! is compared with our own MD5 of the bytes: a mismatch means the store holds
//! something other than what we sent.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use md5::{Digest, Md5};
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{services, ErrorKind, Operator};

use crate::config::{endpoint_host, AddressingStyle, StorageConfig, StorageKind};

/// The directory under the fs root that holds files being written.
pub const ATOMIC_WRITE_DIR: &str = ".uploading";

/// The environment variables OSS credentials are read from.
pub const ENV_ACCESS_KEY_ID: &str = "OSS_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "OSS_ACCESS_KEY_SECRET";

/// OSS credentials. They come only from the environment and are never
/// printed: `Debug` shows the key id's length, not the secret.
#[derive(Clone)]
pub struct OssCredentials {
    access_key_id: String,
    access_key_secret: String,
}

impl fmt::Debug for OssCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OssCredentials")
            .field(
                "access_key_id",
                &format_args!("<{} chars>", self.access_key_id.len()),
            )
            .field("access_key_secret", &"<redacted>")
            .finish()
    }
}

impl OssCredentials {
    /// Reads both variables; a missing or empty one is an error naming it.
    pub fn from_env() -> Result<Self, SetupError> {
        let read = |name: &'static str| match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(value),
            _ => Err(SetupError::MissingEnv { name }),
        };
        Ok(OssCredentials {
            access_key_id: read(ENV_ACCESS_KEY_ID)?,
            access_key_secret: read(ENV_ACCESS_KEY_SECRET)?,
        })
    }
}

/// Why storage could not be set up at startup.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("environment variable {name} is not set; storage.kind = \"oss\" takes credentials only from OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET")]
    MissingEnv { name: &'static str },
    #[error("config key `{key}` = {value}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Why an object could not be stored. Both become an `UploadError`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storing {key} failed: {message}")]
    Unavailable { key: String, message: String },
    #[error("the store's digest for {key} is {reported}, but the bytes' MD5 is {expected}")]
    Integrity {
        key: String,
        expected: String,
        reported: String,
    },
}

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// An identical object was already there; nothing was written.
    Duplicate,
}

/// The configured object store.
#[derive(Debug, Clone)]
pub struct Storage {
    /// For uploads: timeout and retry layers.
    op: Operator,
    /// For readiness: timeout only, so one check costs at most one timeout.
    probe: Operator,
    kind: StorageKind,
    /// Ends in `/`; a key is appended to form a URL.
    public_base_url: String,
    /// Whether `public_base_url` came from the config (else it is derived).
    url_configured: bool,
    /// fs: the root directory, for readiness checks.
    fs_root: Option<PathBuf>,
}

impl Storage {
    /// Builds the operator (fs: creates the root). OSS credentials are read
    /// from the environment when not given. Call `use_admin_addr` once the
    /// admin listener is bound so that derived fs URLs name its real port.
    pub fn new(
        config: &StorageConfig,
        credentials: Option<OssCredentials>,
    ) -> Result<Storage, SetupError> {
        let timeout = config.timeout.get();
        let (raw, derived_url) = match config.kind {
            StorageKind::Fs => {
                let root = config.fs_root();
                let invalid = |e: opendal::Error| SetupError::Invalid {
                    key: "storage.root",
                    value: format!("{:?}", root.display().to_string()),
                    reason: e.to_string(),
                };
                let builder = services::Fs::default()
                    .root(&root.to_string_lossy())
                    .atomic_write_dir(&root.join(ATOMIC_WRITE_DIR).to_string_lossy());
                let op = Operator::new(builder).map_err(invalid)?.finish();
                (op, None)
            }
            StorageKind::Oss => {
                let credentials = match credentials {
                    Some(c) => c,
                    None => OssCredentials::from_env()?,
                };
                let endpoint = config.endpoint.clone().unwrap_or_default();
                let bucket = config.bucket.clone().unwrap_or_default();
                let style = config.addressing_style.unwrap_or_default();
                let builder = services::Oss::default()
                    .endpoint(&endpoint)
                    .bucket(&bucket)
                    .addressing_style(style.as_str())
                    .access_key_id(&credentials.access_key_id)
                    .access_key_secret(&credentials.access_key_secret);
                let op = Operator::new(builder)
                    .map_err(|e| SetupError::Invalid {
                        key: "storage.endpoint",
                        value: format!("{endpoint:?}"),
                        reason: e.to_string(),
                    })?
                    .finish();
                (op, Some(oss_public_base_url(&endpoint, &bucket, style)))
            }
        };
        // Timeout inside retry: each attempt gets the full timeout and a
        // timed-out attempt is retried.
        let timeouts = TimeoutLayer::new()
            .with_timeout(timeout)
            .with_io_timeout(timeout);
        let op = raw.clone().layer(timeouts.clone()).layer(
            RetryLayer::new()
                .with_max_times(config.retries)
                .with_min_delay(Duration::from_millis(100))
                .with_jitter(),
        );
        let probe = raw.layer(timeouts);
        let configured_url = config.public_base_url.clone();
        let public_base_url = configured_url
            .clone()
            .or(derived_url)
            .unwrap_or_else(|| fs_public_base_url(config_admin_placeholder()));
        Ok(Storage {
            op,
            probe,
            kind: config.kind,
            public_base_url: with_trailing_slash(public_base_url),
            url_configured: configured_url.is_some(),
            fs_root: (config.kind == StorageKind::Fs).then(|| config.fs_root()),
        })
    }

    /// Derives the fs URL prefix from the admin listener's bound address,
    /// unless `public_base_url` was configured.
    pub fn use_admin_addr(&mut self, admin_addr: SocketAddr) {
        if self.kind == StorageKind::Fs && !self.url_configured {
            self.public_base_url = fs_public_base_url(admin_addr);
        }
    }

    pub fn kind(&self) -> StorageKind {
        self.kind
    }

    /// The prefix of every returned URL, ending in `/`.
    pub fn public_base_url(&self) -> &str {
        &self.public_base_url
    }

    pub fn url(&self, key: &str) -> String {
        format!("{}{key}", self.public_base_url)
    }

    /// Stores `data` at `key` unless an identical object is already there.
    pub async fn put(
        &self,
        key: &str,
        data: Vec<u8>,
        content_type: &str,
    ) -> Result<PutOutcome, StorageError> {
        let unavailable = |e: opendal::Error| StorageError::Unavailable {
            key: key.to_string(),
            message: e.to_string(),
        };
        let size = data.len() as u64;
        // Only OSS reports an ETag to check against, so only OSS pays for the
        // MD5 (in fs mode it was more than half the uploader's CPU per upload).
        let md5_hex = (self.kind == StorageKind::Oss).then(|| hex::encode(Md5::digest(&data)));
        match self.op.stat(key).await {
            Ok(meta) if meta.is_file() && meta.content_length() == size => {
                // fs reports no ETag; equal size under a SHA-256 name is
                // enough. OSS does, and a stored object with a different
                // digest (a corrupt earlier write) is replaced.
                let same = match (&md5_hex, meta.etag()) {
                    (Some(md5_hex), Some(etag)) => etag_matches(etag, md5_hex),
                    _ => true,
                };
                if same {
                    return Ok(PutOutcome::Duplicate);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(unavailable(e)),
        }
        let meta = self
            .op
            .write_with(key, data)
            .content_type(content_type)
            .await
            .map_err(unavailable)?;
        if let Some(md5_hex) = md5_hex {
            let reported = meta.etag().unwrap_or_default();
            if !etag_matches(reported, &md5_hex) {
                // Leave nothing behind that a retry would mistake for the
                // finished object.
                if let Err(e) = self.op.delete(key).await {
                    tracing::warn!(key, error = %e, "deleting an object with a bad digest failed");
                }
                return Err(StorageError::Integrity {
                    key: key.to_string(),
                    expected: md5_hex,
                    reported: if reported.is_empty() {
                        "missing".to_string()
                    } else {
                        reported.to_string()
                    },
                });
            }
        }
        Ok(PutOutcome::Stored)
    }

    /// Whether the store answers now. fs: the root is a directory. OSS: a
    /// one-entry listing of the bucket succeeds. (OpenDAL's own `check()`
    /// counts "not found" as healthy, which hides a missing root or bucket.)
    pub async fn check(&self) -> Result<(), String> {
        match self.kind {
            // OpenDAL answers `stat("/")` without touching the disk, so ask
            // the file system directly.
            StorageKind::Fs => {
                let root = self.fs_root.as_deref().unwrap_or(Path::new("."));
                match tokio::fs::metadata(root).await {
                    Ok(meta) if meta.is_dir() => Ok(()),
                    Ok(_) => Err(format!("{} is not a directory", root.display())),
                    Err(e) => Err(format!("{}: {e}", root.display())),
                }
            }
            StorageKind::Oss => {
                let mut lister = self
                    .probe
                    .lister_with("/")
                    .limit(1)
                    .await
                    .map_err(|e| e.to_string())?;
                match lister.next().await {
                    Some(Err(e)) => Err(e.to_string()),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Reads a stored object (fs mode serves them from the admin listener).
    /// `Ok(None)` when there is no such file.
    pub async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self.probe.stat(key).await {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
        match self.probe.read(key).await {
            Ok(buffer) => Ok(Some(buffer.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// An OSS ETag for a simple PUT is the quoted upper-case hex MD5 of the body.
fn etag_matches(etag: &str, md5_hex: &str) -> bool {
    let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
    etag.eq_ignore_ascii_case(md5_hex)
}

/// The default admin address, until `use_admin_addr` names the bound one.
fn config_admin_placeholder() -> SocketAddr {
    crate::config::AdminConfig::default().listen.0
}

fn with_trailing_slash(mut url: String) -> String {
    if !url.ends_with('/') {
        url.push('/');
    }
    url
}

/// `http://<admin address>/objects/`. An unspecified bind address (0.0.0.0)
/// is not something a client can connect to, so loopback stands in for it;
/// set `public_base_url` to publish another name.
pub fn fs_public_base_url(admin_addr: SocketAddr) -> String {
    let mut addr = admin_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}/objects/")
}

/// Where OSS serves a bucket's objects: `<scheme>://<bucket>.<host>/` for
/// virtual addressing, `<endpoint>/<bucket>/` for path addressing.
pub fn oss_public_base_url(endpoint: &str, bucket: &str, style: AddressingStyle) -> String {
    let scheme = endpoint.split_once("://").map_or("https", |(s, _)| s);
    let host = endpoint_host(endpoint);
    match style {
        AddressingStyle::Virtual => format!("{scheme}://{bucket}.{host}/"),
        AddressingStyle::Path => format!("{scheme}://{host}/{bucket}/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_case_and_quotes_insensitively() {
        assert!(etag_matches(
            "\"900150983CD24FB0D6963F7D28E17F72\"",
            "900150983cd24fb0d6963f7d28e17f72"
        ));
        assert!(etag_matches(
            "900150983cd24fb0d6963f7d28e17f72",
            "900150983cd24fb0d6963f7d28e17f72"
        ));
        assert!(!etag_matches(
            "\"00000000000000000000000000000000\"",
            "900150983cd24fb0d6963f7d28e17f72"
        ));
        assert!(!etag_matches("", "900150983cd24fb0d6963f7d28e17f72"));
    }

    #[test]
    fn derived_public_urls() {
        assert_eq!(
            fs_public_base_url("127.0.0.1:9091".parse().unwrap()),
            "http://127.0.0.1:9091/objects/"
        );
        assert_eq!(
            fs_public_base_url("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80/objects/"
        );
        assert_eq!(
            oss_public_base_url(
                "https://oss-cn-hangzhou.aliyuncs.com",
                "pics",
                AddressingStyle::Virtual
            ),
            "https://pics.oss-cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(
            oss_public_base_url("http://127.0.0.1:9000", "pics", AddressingStyle::Path),
            "http://127.0.0.1:9000/pics/"
        );
    }

    #[test]
    fn credentials_are_never_printed() {
        let c = OssCredentials {
            access_key_id: "LTAI-id".into(),
            access_key_secret: "very-secret".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("LTAI-id"),
            "{shown}"
        );
    }
}
