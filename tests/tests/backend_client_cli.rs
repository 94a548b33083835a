//! The backend's own Rust client (`uploader::client::Client`) and its CLI
//! (`uploader upload FILE... --server ADDR`, `uploader ping`), against the
//! real server: what a user of either sees.

use std::process::Command;
use std::time::Duration;

use e2e::{binary, http, images, Protocol, TempDir, Uploader, UploaderConfig, ERROR_TOO_LARGE};
use uploader::client::{Client, Flavor};

#[test]
fn backend_client_uploads_framed_binary_and_compact() {
    let cases = [
        (Protocol::Binary, uploader::client::Protocol::Binary),
        (Protocol::Compact, uploader::client::Protocol::Compact),
    ];
    for (ours, theirs) in cases {
        let backend = Uploader::start(
            UploaderConfig::new()
                .workers(2)
                .protocol(ours)
                .max_upload_bytes(8192),
        );
        let flavor = Flavor::new(uploader::client::Transport::Framed, theirs);
        let mut client = Client::connect(backend.thrift_addr(), flavor, Duration::from_secs(10))
            .expect("connect");
        assert_eq!(client.ping().expect("ping"), "pong");
        let r = client
            .upload(images::PNG.to_vec(), Some("a.png"), Some("image/png"))
            .expect("upload");
        let fetched = http::get_url(&r.url).expect("GET");
        assert_eq!(fetched.body.as_ref(), images::PNG, "{ours:?}");
        let err = client
            .upload(images::png_of_size(8193), None, None)
            .expect_err("too large");
        assert_eq!(err.upload_code(), Some(ERROR_TOO_LARGE), "{err}");
    }
}

#[test]
fn cli_uploads_files_and_prints_one_url_each() {
    let backend = Uploader::start(UploaderConfig::new().workers(2));
    let server = backend.thrift_addr().to_string();
    let files = TempDir::new("cli-files");
    let png = files.join("a.png");
    let jpg = files.join("b.jpg");
    std::fs::write(&png, images::PNG).expect("write");
    std::fs::write(&jpg, images::JPEG).expect("write");

    let out = Command::new(binary("uploader"))
        .arg("upload")
        .arg(&png)
        .arg(&jpg)
        .args(["--server", &server, "--timeout", "10s"])
        .output()
        .expect("run uploader upload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "uploader upload failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let urls: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(urls.len(), 2, "one URL per file: {stdout:?}");
    for (url, bytes) in urls.iter().zip([images::PNG, images::JPEG]) {
        let fetched = http::get_url(url.trim()).expect("GET a printed URL");
        assert_eq!(fetched.body.as_ref(), bytes);
    }

    // A refused file: non-zero exit and a message naming the error.
    let bmp = files.join("c.bmp");
    std::fs::write(&bmp, images::BMP).expect("write");
    let out = Command::new(binary("uploader"))
        .arg("upload")
        .arg(&bmp)
        .args(["--server", &server, "--timeout", "10s"])
        .output()
        .expect("run uploader upload");
    assert!(!out.status.success(), "a BMP upload must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR_INVALID_IMAGE"), "stderr: {stderr}");

    let out = Command::new(binary("uploader"))
        .args(["ping", "--server", &server, "--timeout", "10s"])
        .output()
        .expect("run uploader ping");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pong");
}
