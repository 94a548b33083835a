//! The backend in `oss` mode against the fake OSS, which recomputes every
//! request's V1 signature (see `tests/src/fake_oss`).
//!
//! Addressing: virtual-host style, the backend's default and what Aliyun
//! requires, so these tests exercise the production configuration. The
//! bucket's host name (`<bucket>.oss-fake.invalid`) resolves nowhere, so the
//! backend gets the fake as its HTTP proxy, which routes by that host name —
//! the DNS override, one layer up; what is signed is untouched. Path style is
//! not used: OpenDAL 0.55 signs it wrongly (the bucket twice), which
//! `fake_oss.rs::opendal_055_path_style_signs_the_bucket_twice` shows.

use std::time::Duration;

use e2e::fake_oss::Style;
use e2e::{
    http, images, wait_until, FakeOss, Metrics, ThriftClient, Uploader, UploaderConfig,
    ERROR_INTEGRITY, ERROR_STORAGE_UNAVAILABLE,
};

const BUCKET: &str = "avatars-e2e";
const AK: &str = "LTAI5tE2eTestKey";
const SECRET: &str = "e2e-secret-value";

fn fake() -> FakeOss {
    FakeOss::start_with_style(BUCKET, AK, SECRET, Style::Virtual)
}

/// Short storage bounds so failure paths finish quickly.
fn base() -> UploaderConfig {
    UploaderConfig::new()
        .workers(2)
        .set("storage.timeout", "5s")
        .set("storage.retries", 1)
}

fn outcome(backend: &Uploader, outcome: &str) -> f64 {
    Metrics::scrape(backend.admin_addr())
        .get(&format!("uploader_uploads_total{{outcome=\"{outcome}\"}}"))
}

/// Requests the fake received with `method`, whatever their status.
fn requests_with(oss: &FakeOss, method: &str) -> usize {
    oss.requests().iter().filter(|r| r.method == method).count()
}

#[test]
fn upload_lands_in_the_bucket_with_bytes_and_content_type() {
    let oss = fake();
    let backend = Uploader::start(oss.configure(base(), AK, SECRET));
    let mut client = ThriftClient::connect(backend.thrift_addr()).expect("connect");

    for (bytes, mime, _) in images::ALL {
        let result = client
            .upload(bytes, Some("avatar"), None)
            .unwrap_or_else(|e| panic!("upload of a {mime} to OSS: {e}"));
        let (stored, content_type) = oss
            .object(&result.key)
            .unwrap_or_else(|| panic!("key {} not in the bucket: {:?}", result.key, oss.keys()));
        assert_eq!(stored, *bytes, "stored bytes of the {mime}");
        assert_eq!(content_type, *mime);
        // The URL names the bucket's public host and the key.
        assert!(
            result.url.ends_with(&format!("/{}", result.key)) && result.url.contains(BUCKET),
            "url {}",
            result.url
        );
    }
    assert_eq!(oss.signature_failures(), 0, "{:?}", oss.requests());
    // Same bytes again: same key, found by the existence check, not PUT again.
    let again = client.upload(images::PNG, None, None).expect("upload");
    assert!(oss.object(&again.key).is_some());
    assert_eq!(oss.keys().len(), images::ALL.len());
    assert_eq!(
        requests_with(&oss, "PUT"),
        images::ALL.len(),
        "no second PUT for bytes already stored"
    );
    assert_eq!(outcome(&backend, "duplicate"), 1.0);
    // Readiness reflects a reachable bucket.
    assert_eq!(
        http::get(backend.admin_addr(), "/ready")
            .expect("/ready")
            .status,
        200
    );
}

#[test]
fn wrong_secret_is_storage_unavailable_and_the_fake_saw_a_bad_signature() {
    let oss = fake();
    let backend = Uploader::start(oss.configure(base(), AK, "not-the-secret"));
    let mut client = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    let err = client
        .upload(images::PNG, None, None)
        .expect_err("upload with a wrong secret");
    assert_eq!(err.upload_code(), Some(ERROR_STORAGE_UNAVAILABLE), "{err}");
    assert!(oss.signature_failures() >= 1, "{:?}", oss.requests());
    assert!(oss.keys().is_empty());
    assert_eq!(outcome(&backend, "storage_error"), 1.0);
    wait_until(Duration::from_secs(10), "/ready to answer 503", || {
        http::get(backend.admin_addr(), "/ready").is_ok_and(|r| r.status == 503)
    });
}

#[test]
fn failing_store_is_storage_unavailable_then_recovers() {
    let oss = fake();
    let backend = Uploader::start(oss.configure(base(), AK, SECRET));
    let mut client = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    oss.set_failing(true);
    let err = client
        .upload(images::GIF, None, None)
        .expect_err("upload to a failing store");
    assert_eq!(err.upload_code(), Some(ERROR_STORAGE_UNAVAILABLE), "{err}");
    assert!(oss.error_count("ServiceUnavailable") >= 1);
    // The existence check is tried 1 + storage.retries times, then given up.
    assert_eq!(requests_with(&oss, "HEAD"), 2, "{:?}", oss.requests());
    assert_eq!(requests_with(&oss, "PUT"), 0);
    assert_eq!(client.ping().expect("the connection survives"), "pong");

    // A transient failure is retried (storage.retries = 1) and succeeds.
    oss.set_failing(false);
    oss.fail_next(1);
    let ok = client
        .upload(images::GIF, None, None)
        .expect("upload after one 503");
    assert_eq!(oss.object(&ok.key).map(|o| o.0), Some(images::GIF.to_vec()));
}

#[test]
fn etag_that_is_not_our_md5_is_an_integrity_error() {
    let oss = fake();
    let backend = Uploader::start(oss.configure(base(), AK, SECRET));
    let mut client = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    oss.set_corrupt_etag(true);
    let err = client
        .upload(images::WEBP, None, None)
        .expect_err("upload with a corrupt ETag");
    assert_eq!(err.upload_code(), Some(ERROR_INTEGRITY), "{err}");
    assert_eq!(outcome(&backend, "integrity_error"), 1.0);
    // The object whose ETag did not match was deleted: no partial object.
    assert_eq!(requests_with(&oss, "DELETE"), 1, "{:?}", oss.requests());
    assert!(oss.keys().is_empty(), "{:?}", oss.keys());

    // Once the store behaves, the same upload is stored.
    oss.set_corrupt_etag(false);
    let ok = client
        .upload(images::WEBP, None, None)
        .expect("upload once the ETag is right");
    assert_eq!(
        oss.object(&ok.key).map(|o| o.0),
        Some(images::WEBP.to_vec())
    );
}
