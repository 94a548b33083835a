//! The service's methods: what `ping`, `upload` and `touch` do.
//!
//! Handlers run on the pool's worker threads, which are plain std threads.
//! Storage is async (OpenDAL), so each upload drives its storage future to
//! completion on the shared tokio runtime through a `Handle`: the worker
//! blocks, as a thread-per-connection server's worker is meant to, while the
//! I/O itself runs on the runtime. Every failure becomes an `UploadError` with
//! a documented code; nothing here panics on client input.

use std::time::Instant;

use tokio::runtime::Handle;
use uploader_idl::{
    UploadError, UploadRequest, UploadResult, UploaderSyncHandler, ERROR_CONTENT_TYPE_MISMATCH,
    ERROR_EMPTY, ERROR_INTEGRITY, ERROR_INVALID_IMAGE, ERROR_STORAGE_UNAVAILABLE, ERROR_TOO_LARGE,
};

use crate::image::{self, ImageError};
use crate::key::{object_key, sha256_hex};
use crate::metrics::{Metrics, Outcome};
use crate::storage::{PutOutcome, Storage, StorageError};

/// Implements the generated `UploaderSyncHandler`.
#[derive(Debug, Clone)]
pub struct Handler {
    storage: Storage,
    metrics: Metrics,
    /// The runtime storage futures run on.
    runtime: Handle,
    /// Larger uploads are refused with `ERROR_TOO_LARGE`.
    max_upload_bytes: usize,
    key_prefix: String,
}

impl Handler {
    pub fn new(
        storage: Storage,
        metrics: Metrics,
        runtime: Handle,
        max_upload_bytes: usize,
        key_prefix: String,
    ) -> Self {
        Handler {
            storage,
            metrics,
            runtime,
            max_upload_bytes,
            key_prefix,
        }
    }

    /// The whole upload path, with its outcome counted. Must not be called
    /// from inside the runtime (it blocks on it).
    pub fn upload(&self, req: UploadRequest) -> Result<UploadResult, UploadError> {
        let filename = req.filename.clone().unwrap_or_default();
        let size = req.data.len();
        let result = self.try_upload(req);
        let outcome = match &result {
            Ok((_, outcome)) => *outcome,
            Err((outcome, _)) => *outcome,
        };
        self.metrics.upload(outcome);
        match result {
            Ok((stored, outcome)) => {
                self.metrics.upload_bytes.inc_by(size as u64);
                tracing::info!(
                    key = %stored.key,
                    size,
                    filename = %filename,
                    outcome = outcome.label(),
                    "upload stored"
                );
                Ok(stored)
            }
            Err((outcome, error)) => {
                if matches!(outcome, Outcome::StorageError | Outcome::IntegrityError) {
                    tracing::warn!(size, filename = %filename, outcome = outcome.label(), error = %error.message, "upload failed");
                } else {
                    tracing::info!(size, filename = %filename, outcome = outcome.label(), error = %error.message, "upload refused");
                }
                Err(error)
            }
        }
    }

    fn try_upload(
        &self,
        req: UploadRequest,
    ) -> Result<(UploadResult, Outcome), (Outcome, UploadError)> {
        let refuse = |outcome, code, message: String| (outcome, UploadError::new(code, message));
        let data = req.data;
        if data.is_empty() {
            return Err(refuse(
                Outcome::Empty,
                ERROR_EMPTY,
                "the upload is empty (0 bytes)".to_string(),
            ));
        }
        if data.len() > self.max_upload_bytes {
            return Err(refuse(
                Outcome::TooLarge,
                ERROR_TOO_LARGE,
                format!(
                    "the upload is {} bytes; the limit is {} bytes",
                    data.len(),
                    self.max_upload_bytes
                ),
            ));
        }
        let kind = image::detect(&data)
            .map_err(|e| refuse(Outcome::InvalidImage, ERROR_INVALID_IMAGE, e.to_string()))?;
        image::check_declared(req.content_type.as_deref(), kind).map_err(|e| match e {
            ImageError::Mismatch { .. } => refuse(
                Outcome::ContentTypeMismatch,
                ERROR_CONTENT_TYPE_MISMATCH,
                e.to_string(),
            ),
            other => refuse(
                Outcome::InvalidImage,
                ERROR_INVALID_IMAGE,
                other.to_string(),
            ),
        })?;

        let sha256 = sha256_hex(&data);
        let key = object_key(&self.key_prefix, &sha256, kind);
        let size = data.len() as i64;
        let started = Instant::now();
        let put = self
            .runtime
            .block_on(self.storage.put(&key, data, kind.mime()));
        self.metrics
            .storage_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match put {
            Ok(PutOutcome::Stored) => Outcome::Stored,
            Ok(PutOutcome::Duplicate) => Outcome::Duplicate,
            Err(e @ StorageError::Unavailable { .. }) => {
                return Err(refuse(
                    Outcome::StorageError,
                    ERROR_STORAGE_UNAVAILABLE,
                    format!("{e}; retry later"),
                ))
            }
            Err(e @ StorageError::Integrity { .. }) => {
                return Err(refuse(
                    Outcome::IntegrityError,
                    ERROR_INTEGRITY,
                    format!("{e}; retry"),
                ))
            }
        };
        let result = UploadResult::new(
            self.storage.url(&key),
            key,
            size,
            kind.mime().to_string(),
            sha256,
        );
        Ok((result, outcome))
    }
}

impl UploaderSyncHandler for Handler {
    fn handle_ping(&self) -> thrift::Result<String> {
        Ok("pong".to_string())
    }

    fn handle_upload(&self, req: UploadRequest) -> thrift::Result<UploadResult> {
        self.upload(req).map_err(thrift::Error::from)
    }

    fn handle_touch(&self, note: String) -> thrift::Result<()> {
        // Bounded: the note is client input and ends up in a log line.
        let shown: String = note.chars().take(200).collect();
        tracing::info!(note = %shown, len = note.len(), "touch");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    struct Fixture {
        _runtime: tokio::runtime::Runtime,
        handler: Handler,
        metrics: Metrics,
        root: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn fixture(name: &str, max: usize) -> Fixture {
        let root =
            std::env::temp_dir().join(format!("uploader-handler-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let text = format!("[storage]\nroot = {:?}\n", root.display().to_string());
        let config = Config::parse(&text).expect("config");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut storage = Storage::new(&config.storage, None).expect("storage");
        storage.use_admin_addr("127.0.0.1:8000".parse().unwrap());
        let metrics = Metrics::new(1);
        let handler = Handler::new(
            storage,
            metrics.clone(),
            runtime.handle().clone(),
            max,
            "images".into(),
        );
        Fixture {
            _runtime: runtime,
            handler,
            metrics,
            root,
        }
    }

    fn req(data: &[u8], content_type: Option<&str>) -> UploadRequest {
        UploadRequest::new(data.to_vec(), None, content_type.map(str::to_string))
    }

    #[test]
    fn stores_then_recognises_a_duplicate() {
        let f = fixture("dup", 1024);
        let first = f
            .handler
            .upload(req(PNG, Some("image/png")))
            .expect("stored");
        let sha = sha256_hex(PNG);
        assert_eq!(
            first.key,
            format!("images/{}/{}/{sha}.png", &sha[..2], &sha[2..4])
        );
        assert_eq!(
            first.url,
            format!("http://127.0.0.1:8000/objects/{}", first.key)
        );
        assert_eq!(first.size, PNG.len() as i64);
        assert_eq!(first.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(std::fs::read(f.root.join(&first.key)).expect("file"), PNG);
        let second = f.handler.upload(req(PNG, None)).expect("duplicate");
        assert_eq!(second.key, first.key);
        let text = f.metrics.render();
        assert!(
            text.contains("uploader_uploads_total{outcome=\"stored\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("uploader_uploads_total{outcome=\"duplicate\"} 1"),
            "{text}"
        );
        // Nothing is left in the atomic-write directory.
        let leftovers = std::fs::read_dir(f.root.join(crate::storage::ATOMIC_WRITE_DIR))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn each_refusal_has_its_code() {
        let f = fixture("codes", PNG.len());
        let mut too_large = PNG.to_vec();
        too_large.push(0);
        let cases: Vec<(UploadRequest, i32)> = vec![
            (req(b"", None), ERROR_EMPTY),
            (req(&too_large, None), ERROR_TOO_LARGE),
            (req(b"%PDF-1.7\n", None), ERROR_INVALID_IMAGE),
            (req(PNG, Some("image/jpeg")), ERROR_CONTENT_TYPE_MISMATCH),
        ];
        for (request, code) in cases {
            let err = f.handler.upload(request).expect_err("refused");
            assert_eq!(err.code, code, "{}", err.message);
        }
        assert!(f.handler.upload(req(PNG, Some("IMAGE/PNG; q=1"))).is_ok());
    }
}
