//! The backend in fs mode, through the Rust Thrift client: what a user of
//! `upload()` sees — the URL serves the exact bytes, the same bytes give the
//! same URL, and every refusal carries its documented code — and what an
//! operator sees in `/metrics`.

use std::time::Duration;

use e2e::client::CALL_TIMEOUT;
use e2e::{
    http, images, wait_until, Metrics, Protocol, ThriftClient, Transport, Uploader, UploaderConfig,
    ERROR_CONTENT_TYPE_MISMATCH, ERROR_EMPTY, ERROR_INVALID_IMAGE, ERROR_STORAGE_UNAVAILABLE,
    ERROR_TOO_LARGE,
};
use sha2::{Digest, Sha256};

fn outcome(m: &Metrics, outcome: &str) -> f64 {
    m.get(&format!("uploader_uploads_total{{outcome=\"{outcome}\"}}"))
}

#[test]
fn uploaded_url_serves_the_exact_bytes_and_same_bytes_give_same_url() {
    let backend = Uploader::start(UploaderConfig::new().workers(2));
    let mut client = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    assert_eq!(client.ping().expect("ping"), "pong");

    for (bytes, mime, ext) in images::ALL {
        let result = client
            .upload(bytes, Some(&format!("avatar.{ext}")), None)
            .unwrap_or_else(|e| panic!("upload of a {mime}: {e}"));
        let sha = hex::encode(Sha256::digest(bytes));
        assert_eq!(result.size, bytes.len() as i64);
        assert_eq!(result.content_type.as_deref(), Some(*mime));
        assert_eq!(result.sha256.as_deref(), Some(sha.as_str()));
        let tail = format!("/{}/{}/{sha}.{ext}", &sha[..2], &sha[2..4]);
        assert!(
            result.key.ends_with(&tail),
            "key {} should end with {tail}",
            result.key
        );
        assert!(
            result.url.ends_with(&result.key),
            "url {} should end with the key",
            result.url
        );

        let fetched = http::get_url(&result.url).expect("GET the returned URL");
        assert_eq!(
            fetched.status,
            200,
            "GET {}: {}",
            result.url,
            fetched.text()
        );
        assert_eq!(fetched.body.as_ref(), *bytes, "bytes served for {mime}");
        assert_eq!(fetched.header("content-type"), Some(*mime));
    }

    // Idempotent: the same bytes again (another filename, another
    // connection) give the same key and URL.
    let first = client
        .upload(images::JPEG, Some("a.jpg"), None)
        .expect("upload");
    let mut other = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    let second = other
        .upload(images::JPEG, Some("b.jpg"), Some("image/jpeg"))
        .expect("upload");
    assert_eq!(
        (first.key.as_str(), first.url.as_str()),
        (second.key.as_str(), second.url.as_str())
    );
    // ...and different bytes a different one.
    let unique = other
        .upload(&images::unique_png("x"), None, None)
        .expect("upload");
    assert_ne!(unique.key, first.key);

    let m = Metrics::scrape(backend.admin_addr());
    assert_eq!(
        outcome(&m, "stored") + outcome(&m, "duplicate"),
        7.0,
        "{}",
        m.text
    );
    assert_eq!(outcome(&m, "stored"), 5.0, "{}", m.text);
    let total: usize = images::ALL.iter().map(|(b, _, _)| b.len()).sum::<usize>()
        + 2 * images::JPEG.len()
        + images::unique_png("x").len();
    assert!(
        m.get("uploader_upload_bytes_total") >= (total - 2 * images::JPEG.len()) as f64,
        "{}",
        m.text
    );
    assert!(m.get("uploader_storage_seconds_count") >= 5.0);
    assert!(m.get("uploader_connections_accepted_total") >= 2.0);
}

#[test]
fn each_refusal_returns_its_documented_code() {
    let limit = 4096;
    let backend = Uploader::start(UploaderConfig::new().workers(2).max_upload_bytes(limit));
    let mut client = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    let code = |client: &mut ThriftClient, data: &[u8], ct: Option<&str>| match client.upload(
        data,
        Some("f"),
        ct,
    ) {
        Ok(r) => panic!("upload of {} bytes should fail, got {}", data.len(), r.url),
        Err(e) => e
            .upload_code()
            .unwrap_or_else(|| panic!("not an UploadError: {e}")),
    };

    assert_eq!(code(&mut client, b"", None), ERROR_EMPTY);
    let too_big = images::png_of_size(limit as usize + 1);
    assert_eq!(code(&mut client, &too_big, None), ERROR_TOO_LARGE);
    // The limit itself is allowed.
    let at_limit = images::png_of_size(limit as usize);
    client
        .upload(&at_limit, None, None)
        .expect("an upload of exactly max_upload_bytes");
    assert_eq!(
        code(&mut client, images::NOT_AN_IMAGE, None),
        ERROR_INVALID_IMAGE
    );
    assert_eq!(code(&mut client, images::BMP, None), ERROR_INVALID_IMAGE);
    assert_eq!(
        code(&mut client, images::PNG, Some("image/jpeg")),
        ERROR_CONTENT_TYPE_MISMATCH
    );
    // The connection survives refusals.
    assert_eq!(client.ping().expect("ping after refusals"), "pong");

    let m = Metrics::scrape(backend.admin_addr());
    for (name, n) in [
        ("empty", 1.0),
        ("too_large", 1.0),
        ("invalid_image", 2.0),
        ("content_type_mismatch", 1.0),
        ("stored", 1.0),
    ] {
        assert_eq!(outcome(&m, name), n, "outcome {name}:\n{}", m.text);
    }
}

/// A frame far over `max_upload_bytes` is refused before it is buffered:
/// the client gets an error or a closed connection, never a hang, and the
/// backend keeps serving.
#[test]
fn huge_upload_is_refused_and_backend_keeps_serving() {
    let backend = Uploader::start(UploaderConfig::new().workers(2).max_upload_bytes(10_000));
    let mut client = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    let huge = images::png_of_size(2_000_000);
    match client.upload(&huge, None, None) {
        Ok(r) => panic!("a 2 MB upload passed a 10 kB limit: {}", r.url),
        Err(e) => {
            if let Some(code) = e.upload_code() {
                assert_eq!(code, ERROR_TOO_LARGE, "{e}");
            }
        }
    }
    let mut fresh = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    fresh
        .upload(images::GIF, None, None)
        .expect("a small upload after a huge one");
}

/// fs storage that cannot be written: the upload fails with
/// ERROR_STORAGE_UNAVAILABLE (never a dropped connection), and succeeds again
/// once the directory is usable.
#[test]
fn unwritable_fs_root_is_storage_unavailable() {
    let backend = Uploader::start(
        UploaderConfig::new()
            .workers(2)
            .set("storage.retries", 0)
            .set("storage.timeout", "5s"),
    );
    let root = backend.data_dir().expect("fs mode has a data dir");
    // A regular file where the root directory should be: nothing can be
    // created under it (this holds for root too, unlike permission bits).
    let _ = std::fs::remove_dir_all(&root);
    std::fs::write(&root, b"not a directory").expect("replace the root with a file");

    let mut client = ThriftClient::connect(backend.thrift_addr()).expect("connect");
    let err = client
        .upload(images::PNG, None, None)
        .expect_err("upload into an unusable root");
    assert_eq!(err.upload_code(), Some(ERROR_STORAGE_UNAVAILABLE), "{err}");
    assert_eq!(client.ping().expect("the connection survives"), "pong");
    let m = Metrics::scrape(backend.admin_addr());
    assert_eq!(outcome(&m, "storage_error"), 1.0, "{}", m.text);
    // Readiness reports the broken store.
    wait_until(Duration::from_secs(10), "/ready to answer 503", || {
        http::get(backend.admin_addr(), "/ready").is_ok_and(|r| r.status == 503)
    });

    std::fs::remove_file(&root).expect("remove the blocking file");
    std::fs::create_dir_all(&root).expect("recreate the root");
    client
        .upload(images::PNG, None, None)
        .expect("upload once the root is usable again");
    wait_until(Duration::from_secs(10), "/ready to answer 200", || {
        http::get(backend.admin_addr(), "/ready").is_ok_and(|r| r.status == 200)
    });
}

/// Every transport/protocol combination the backend can be configured with
/// works with a client of the same flavour.
#[test]
fn every_flavour_round_trips() {
    for transport in [Transport::Framed, Transport::Buffered] {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let backend = Uploader::start(
                UploaderConfig::new()
                    .workers(1)
                    .transport(transport)
                    .protocol(protocol),
            );
            let mut client = ThriftClient::connect_with(
                backend.thrift_addr(),
                transport,
                protocol,
                CALL_TIMEOUT,
            )
            .expect("connect");
            let what = format!("{transport:?}/{protocol:?}");
            assert_eq!(
                client.ping().unwrap_or_else(|e| panic!("{what}: {e}")),
                "pong"
            );
            let r = client
                .upload(images::WEBP, None, None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let fetched = http::get_url(&r.url).expect("GET");
            assert_eq!(fetched.body.as_ref(), images::WEBP, "{what}");
            let err = client.upload(b"", None, None).expect_err("empty");
            assert_eq!(err.upload_code(), Some(ERROR_EMPTY), "{what}: {err}");
        }
    }
}

#[test]
fn admin_endpoints_answer() {
    let backend = Uploader::start(UploaderConfig::new());
    let admin = backend.admin_addr();
    assert_eq!(http::get(admin, "/live").expect("/live").status, 200);
    assert_eq!(http::get(admin, "/ready").expect("/ready").status, 200);
    let m = Metrics::scrape(admin);
    assert_eq!(m.get("uploader_workers_busy"), 0.0);
    assert_eq!(http::get(admin, "/nope").expect("/nope").status, 404);
}
