//! The fake OSS itself: it must accept a correctly signed request and refuse
//! everything OSS would refuse, or the backend's OSS tests prove nothing.
//!
//! Requests here are built by hand (headers, Date, Authorization) and, in the
//! last tests, by Apache OpenDAL, the client library the backend uses.

use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use e2e::fake_oss::signature::{authorization, sign, SignedParts};
use e2e::fake_oss::Style;
use e2e::{http, images, FakeOss};
use hyper::{Method, StatusCode};
use md5::{Digest as _, Md5};
use sha2::Sha256;

const BUCKET: &str = "avatars";
const AK: &str = "LTAI-test-key";
const SECRET: &str = "right-secret";

/// The content-addressed key the backend would use for `data`.
fn key_for(data: &[u8], ext: &str) -> String {
    let hash = hex::encode(Sha256::digest(data));
    format!("img/{}/{}/{hash}.{ext}", &hash[..2], &hash[2..4])
}

/// Sends a V1-signed request, signing with `secret` and `ak`.
#[allow(clippy::too_many_arguments)]
fn signed(
    oss: &FakeOss,
    method: Method,
    bucket: &str,
    key: &str,
    body: &[u8],
    content_type: &str,
    with_md5: Option<&str>,
    ak: &str,
    secret: &str,
) -> http::Response {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let md5 = with_md5.unwrap_or("");
    let parts = SignedParts {
        verb: method.as_str(),
        content_md5: md5,
        content_type,
        date: &date,
        headers: vec![("x-oss-meta-origin", "e2e")],
        bucket,
        key,
        query: vec![],
    };
    let auth = authorization(ak, secret, &parts);
    let mut headers = vec![
        ("date", date.as_str()),
        ("authorization", auth.as_str()),
        ("x-oss-meta-origin", "e2e"),
    ];
    if !content_type.is_empty() {
        headers.push(("content-type", content_type));
    }
    if with_md5.is_some() {
        headers.push(("content-md5", md5));
    }
    let path = format!("/{bucket}/{key}");
    http::request(
        method,
        oss.addr(),
        &path,
        &headers,
        Bytes::copy_from_slice(body),
    )
    .expect("request to the fake OSS")
}

fn md5_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

fn error_code(resp: &http::Response) -> String {
    let text = resp.text();
    text.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("")
        .to_string()
}

#[test]
fn right_secret_is_accepted_and_wrong_secret_refused() {
    let oss = FakeOss::start(BUCKET, AK, SECRET);
    let data = images::PNG;
    let key = key_for(data, "png");
    let md5 = md5_b64(data);

    // The required negative test: same request, wrong secret.
    let resp = signed(
        &oss,
        Method::PUT,
        BUCKET,
        &key,
        data,
        "image/png",
        Some(&md5),
        AK,
        "wrong-secret",
    );
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text());
    assert_eq!(error_code(&resp), "SignatureDoesNotMatch");
    assert!(
        oss.object(&key).is_none(),
        "a refused PUT stored the object"
    );
    assert_eq!(oss.signature_failures(), 1);

    let resp = signed(
        &oss,
        Method::PUT,
        BUCKET,
        &key,
        data,
        "image/png",
        Some(&md5),
        AK,
        SECRET,
    );
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let etag = format!("\"{}\"", hex::encode_upper(Md5::digest(data)));
    assert_eq!(resp.header("etag"), Some(etag.as_str()));
    let (stored, content_type) = oss.object(&key).expect("stored");
    assert_eq!(stored, data);
    assert_eq!(content_type, "image/png");

    let resp = signed(&oss, Method::GET, BUCKET, &key, b"", "", None, AK, SECRET);
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body.as_ref(), data);
    assert_eq!(resp.header("content-type"), Some("image/png"));
    assert_eq!(resp.header("etag"), Some(etag.as_str()));
    assert!(resp.header("last-modified").is_some());

    let resp = signed(&oss, Method::HEAD, BUCKET, &key, b"", "", None, AK, SECRET);
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.header("content-length"),
        Some(data.len().to_string().as_str())
    );
}

#[test]
fn refuses_what_oss_refuses() {
    let oss = FakeOss::start(BUCKET, AK, SECRET);
    let data = images::GIF;
    let key = key_for(data, "gif");

    let resp = signed(
        &oss,
        Method::PUT,
        BUCKET,
        &key,
        data,
        "image/gif",
        None,
        "someone-else",
        SECRET,
    );
    assert_eq!(
        (resp.status, error_code(&resp).as_str()),
        (StatusCode::FORBIDDEN, "InvalidAccessKeyId")
    );

    let resp = signed(
        &oss,
        Method::PUT,
        "other-bucket",
        &key,
        data,
        "image/gif",
        None,
        AK,
        SECRET,
    );
    assert_eq!(
        (resp.status, error_code(&resp).as_str()),
        (StatusCode::NOT_FOUND, "NoSuchBucket")
    );

    let wrong_md5 = md5_b64(b"other bytes");
    let resp = signed(
        &oss,
        Method::PUT,
        BUCKET,
        &key,
        data,
        "image/gif",
        Some(&wrong_md5),
        AK,
        SECRET,
    );
    assert_eq!(
        (resp.status, error_code(&resp).as_str()),
        (StatusCode::BAD_REQUEST, "InvalidDigest")
    );

    // The key names a different SHA-256 than the body has.
    let other_key = key_for(images::PNG, "gif");
    let resp = signed(
        &oss,
        Method::PUT,
        BUCKET,
        &other_key,
        data,
        "image/gif",
        None,
        AK,
        SECRET,
    );
    assert_eq!(
        (resp.status, error_code(&resp).as_str()),
        (StatusCode::BAD_REQUEST, "InvalidDigest")
    );

    let resp = signed(&oss, Method::GET, BUCKET, &key, b"", "", None, AK, SECRET);
    assert_eq!(
        (resp.status, error_code(&resp).as_str()),
        (StatusCode::NOT_FOUND, "NoSuchKey")
    );

    // No Authorization at all.
    let resp = http::get(oss.addr(), &format!("/{BUCKET}/{key}")).unwrap();
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(oss.keys().is_empty());
}

#[test]
fn failure_switches() {
    let oss = FakeOss::start(BUCKET, AK, SECRET);
    let data = images::JPEG;
    let key = key_for(data, "jpg");

    oss.fail_next(2);
    for _ in 0..2 {
        let resp = signed(
            &oss,
            Method::PUT,
            BUCKET,
            &key,
            data,
            "image/jpeg",
            None,
            AK,
            SECRET,
        );
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    oss.set_corrupt_etag(true);
    let resp = signed(
        &oss,
        Method::PUT,
        BUCKET,
        &key,
        data,
        "image/jpeg",
        None,
        AK,
        SECRET,
    );
    assert_eq!(resp.status, StatusCode::OK);
    let honest = format!("\"{}\"", hex::encode_upper(Md5::digest(data)));
    assert_ne!(resp.header("etag"), Some(honest.as_str()));

    oss.set_failing(true);
    let resp = signed(&oss, Method::GET, BUCKET, &key, b"", "", None, AK, SECRET);
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    oss.set_failing(false);
    let resp = signed(&oss, Method::GET, BUCKET, &key, b"", "", None, AK, SECRET);
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(oss.count("PUT", 503), 2);
}

fn opendal(oss: &FakeOss, style: &str, secret: &str) -> opendal::Operator {
    let builder = opendal::services::Oss::default()
        .endpoint(&oss.endpoint())
        .bucket(oss.bucket())
        .access_key_id(AK)
        .access_key_secret(secret)
        .addressing_style(style);
    opendal::Operator::new(builder)
        .expect("OpenDAL OSS operator")
        .finish()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// OpenDAL with a bucket-bound endpoint (`cname`): the canonical resource is
/// `/bucket/key` as the spec says, and every operation the backend needs
/// works against the fake.
#[test]
fn opendal_cname_style_round_trip() {
    let oss = FakeOss::start_with_style(BUCKET, AK, SECRET, Style::Cname);
    let op = opendal(&oss, "cname", SECRET);
    let data = images::WEBP;
    let key = key_for(data, "webp");
    block_on(async {
        op.check().await.expect("check (list of the root)");
        op.write_with(&key, data.to_vec())
            .content_type("image/webp")
            .await
            .expect("write");
        let meta = op.stat(&key).await.expect("stat");
        assert_eq!(meta.content_length(), data.len() as u64);
        assert_eq!(meta.content_type(), Some("image/webp"));
        let back = op.read(&key).await.expect("read").to_vec();
        assert_eq!(back, data);
        let missing = op.stat("img/00/00/missing.png").await.unwrap_err();
        assert_eq!(missing.kind(), opendal::ErrorKind::NotFound);
    });
    assert_eq!(
        oss.object(&key).map(|o| o.1),
        Some("image/webp".to_string())
    );
    assert_eq!(oss.signature_failures(), 0);

    let wrong = opendal(&oss, "cname", "wrong-secret");
    let err =
        block_on(wrong.write(&key_for(images::PNG, "png"), images::PNG.to_vec())).unwrap_err();
    assert_eq!(err.kind(), opendal::ErrorKind::PermissionDenied, "{err}");
    assert_eq!(oss.signature_failures(), 1);
}

/// A canary for a known client bug: OpenDAL 0.55 (reqsign 0.16.5) signs a
/// path-style request's resource as `/bucket/bucket/key` — the bucket twice
/// (fixed upstream in opendal-reqsign PR #692). Real OSS refuses that, and so
/// does the fake: this test shows the fake computes the spec's string, and it
/// fails once the dependency is fixed, which is the moment to switch the
/// backend's tests to path style.
#[test]
fn opendal_055_path_style_signs_the_bucket_twice() {
    let oss = FakeOss::start_with_style(BUCKET, AK, SECRET, Style::Path);
    let op = opendal(&oss, "path", SECRET);
    let data = images::PNG;
    let key = key_for(data, "png");
    let err = block_on(op.write(&key, data.to_vec())).unwrap_err();
    assert_eq!(err.kind(), opendal::ErrorKind::PermissionDenied, "{err}");
    let refused = oss
        .requests()
        .into_iter()
        .find(|r| r.error.as_deref() == Some("SignatureDoesNotMatch"))
        .expect("a SignatureDoesNotMatch");
    let expected = refused.string_to_sign.expect("string to sign recorded");
    assert!(
        expected.ends_with(&format!("\n/{BUCKET}/{key}")),
        "{expected}"
    );
    // What the client signed instead: the same string with the bucket twice.
    let doubled = expected.replace(&format!("\n/{BUCKET}/"), &format!("\n/{BUCKET}/{BUCKET}/"));
    let sent = refused.authorization.expect("authorization recorded");
    assert_eq!(sent, format!("OSS {AK}:{}", sign(SECRET, &doubled)));
}
