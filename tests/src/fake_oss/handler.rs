//! One request to the fake OSS: authenticate, then PUT/GET/HEAD/DELETE an
//! object or list the bucket, answering errors the way OSS does (status code
//! plus an XML `<Error>` body with `Code`, `Message`, `RequestId`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::signature::{parse_authorization, sign, string_to_sign, SignedParts};
use super::{Object, Recorded, Shared, Style};

/// OSS refuses requests whose Date is further than this from its clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

type Reply = Response<Full<Bytes>>;

/// An answer plus what to record about it.
struct Answer {
    reply: Reply,
    error: Option<String>,
}

pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let (parts, body) = req.into_parts();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut string_to_sign_seen = None;
    let answer = match body.collect().await {
        Ok(body) => respond(shared, &parts, body.to_bytes(), &mut string_to_sign_seen),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            &e.to_string(),
            None,
        ),
    };
    let mut state = shared.state();
    state.log.push(Recorded {
        method,
        path,
        query,
        status: answer.reply.status().as_u16(),
        error: answer.error,
        string_to_sign: string_to_sign_seen,
        authorization,
    });
    Ok(answer.reply)
}

fn respond(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    seen: &mut Option<String>,
) -> Answer {
    {
        let mut state = shared.state();
        if state.failing || state.fail_next > 0 {
            state.fail_next = state.fail_next.saturating_sub(1);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the fake OSS was told to fail this request",
                None,
            );
        }
    }
    let config = &shared.config;
    let raw_path = parts.uri.path();
    let decoded = match percent_decode(raw_path) {
        Some(p) => p,
        None => return error(StatusCode::BAD_REQUEST, "InvalidURI", raw_path, None),
    };
    // Which bucket and key the request names.
    let (bucket, key) = match config.style {
        Style::Virtual => {
            // Absolute-form URI (we are the client's proxy) or Host header.
            let host = parts
                .uri
                .host()
                .map(str::to_string)
                .or_else(|| {
                    parts
                        .headers
                        .get("host")
                        .and_then(|v| v.to_str().ok())
                        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_string())
                })
                .unwrap_or_default();
            let domain = super::VIRTUAL_ENDPOINT.trim_start_matches("http://");
            let bucket = host
                .strip_suffix(domain)
                .and_then(|b| b.strip_suffix('.'))
                .unwrap_or(&host)
                .to_string();
            (bucket, decoded.trim_start_matches('/').to_string())
        }
        Style::Path => {
            let rest = decoded.trim_start_matches('/');
            match rest.split_once('/') {
                Some((b, k)) => (b.to_string(), k.to_string()),
                None => (rest.to_string(), String::new()),
            }
        }
        Style::Cname => (
            config.bucket.clone(),
            decoded.trim_start_matches('/').to_string(),
        ),
    };
    if bucket != config.bucket {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            &format!("The specified bucket does not exist: {bucket:?}"),
            None,
        );
    }
    let query = parse_query(parts.uri.query().unwrap_or(""));
    if let Some(refused) = authenticate(shared, parts, &bucket, &key, &query, seen) {
        return refused;
    }
    let is_list = query.iter().any(|(k, _)| k == "list-type");
    match (&parts.method, key.is_empty() || is_list) {
        (&Method::GET, true) => list(shared, &query),
        (&Method::PUT, false) if query.is_empty() => put(shared, parts, &key, body),
        (&Method::GET, false) | (&Method::HEAD, false)
            if query.iter().all(|(k, _)| k.starts_with("response-")) =>
        {
            get(shared, parts, &key)
        }
        (&Method::DELETE, false) if query.is_empty() => {
            shared.state().objects.remove(&key);
            plain(StatusCode::NO_CONTENT, Bytes::new())
        }
        _ => error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            &format!(
                "the fake OSS does not implement {} {raw_path}?{:?}",
                parts.method, query
            ),
            None,
        ),
    }
}

/// Checks `Authorization: OSS ak:signature`; `Some(answer)` refuses.
fn authenticate(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    bucket: &str,
    key: &str,
    query: &[(String, String)],
    seen: &mut Option<String>,
) -> Option<Answer> {
    let config = &shared.config;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let Some((ak, signature)) = parse_authorization(header("authorization")) else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "missing or malformed Authorization header (want `OSS ak:signature`)",
            None,
        ));
    };
    if ak != config.access_key_id {
        return Some(error(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            &format!("The OSS Access Key Id you provided does not exist: {ak}"),
            None,
        ));
    }
    let date = header("date");
    match httpdate::parse_http_date(date) {
        Ok(when) => {
            let skew = match SystemTime::now().duration_since(when) {
                Ok(d) => d,
                Err(e) => e.duration(),
            };
            if skew > MAX_CLOCK_SKEW {
                return Some(error(
                    StatusCode::FORBIDDEN,
                    "RequestTimeTooSkewed",
                    &format!("Date {date:?} is too far from the server time"),
                    None,
                ));
            }
        }
        Err(_) => {
            return Some(error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                &format!("missing or invalid Date header: {date:?}"),
                None,
            ))
        }
    }
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
        .collect();
    let query_refs: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected_string = string_to_sign(&SignedParts {
        verb: parts.method.as_str(),
        content_md5: header("content-md5"),
        content_type: header("content-type"),
        date,
        headers,
        bucket,
        key,
        query: query_refs,
    });
    let expected = sign(&config.secret, &expected_string);
    *seen = Some(expected_string.clone());
    if signature != expected {
        return Some(error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
            Some(&expected_string),
        ));
    }
    None
}

fn put(shared: &Shared, parts: &hyper::http::request::Parts, key: &str, body: Bytes) -> Answer {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let md5 = Md5::digest(&body);
    if let Some(sent) = header("content-md5") {
        let matches = base64::engine::general_purpose::STANDARD
            .decode(sent)
            .is_ok_and(|d| d.as_slice() == md5.as_slice());
        if !matches {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidDigest",
                &format!("Content-MD5 {sent:?} does not match the body"),
                None,
            );
        }
    }
    // Keys are content-addressed: `.../<sha256 hex>.<ext>`.
    let file = key.rsplit('/').next().unwrap_or(key);
    let named_hash = file.split('.').next().unwrap_or("");
    let is_hash = named_hash.len() == 64 && named_hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hash {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidObjectName",
            &format!("key {key:?} is not content-addressed (<sha256>.<ext>)"),
            None,
        );
    }
    let actual = hex::encode(Sha256::digest(&body));
    if !named_hash.eq_ignore_ascii_case(&actual) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidDigest",
            &format!("key {key:?} names sha256 {named_hash} but the body's is {actual}"),
            None,
        );
    }
    let content_type = header("content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut state = shared.state();
    let mut etag = hex::encode_upper(md5);
    if state.corrupt_etag {
        etag = hex::encode_upper(Md5::digest(b"corrupted by the fake OSS"));
    }
    state.objects.insert(
        key.to_string(),
        Object {
            data: body.to_vec(),
            content_type,
            last_modified: SystemTime::now(),
        },
    );
    let mut reply = Response::new(Full::new(Bytes::new()));
    let headers = reply.headers_mut();
    insert(headers, "etag", &format!("\"{etag}\""));
    insert(headers, "x-oss-request-id", &request_id());
    insert(headers, "content-length", "0");
    Answer { reply, error: None }
}

fn get(shared: &Shared, parts: &hyper::http::request::Parts, key: &str) -> Answer {
    let state = shared.state();
    let Some(object) = state.objects.get(key) else {
        let mut answer = error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            &format!("The specified key does not exist: {key}"),
            None,
        );
        if parts.method == Method::HEAD {
            *answer.reply.body_mut() = Full::new(Bytes::new());
        }
        return answer;
    };
    let etag = format!("\"{}\"", hex::encode_upper(Md5::digest(&object.data)));
    let body = if parts.method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(object.data.clone())
    };
    let mut reply = Response::new(Full::new(body));
    let headers = reply.headers_mut();
    insert(headers, "content-length", &object.data.len().to_string());
    insert(headers, "content-type", &object.content_type);
    insert(headers, "etag", &etag);
    insert(
        headers,
        "last-modified",
        &httpdate::fmt_http_date(object.last_modified),
    );
    insert(headers, "x-oss-request-id", &request_id());
    insert(headers, "x-oss-object-type", "Normal");
    Answer { reply, error: None }
}

/// `ListObjectsV2`: prefix, delimiter and max-keys; one page.
fn list(shared: &Shared, query: &[(String, String)]) -> Answer {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let prefix = param("prefix");
    let delimiter = param("delimiter");
    let max_keys: usize = param("max-keys").parse().unwrap_or(1000);
    let state = shared.state();
    let mut contents = String::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut count = 0;
    for (key, object) in state.objects.range(prefix.to_string()..) {
        if !key.starts_with(prefix) || count >= max_keys {
            break;
        }
        let rest = &key[prefix.len()..];
        if !delimiter.is_empty() {
            if let Some(i) = rest.find(delimiter) {
                let common = format!("{prefix}{}", &rest[..i + delimiter.len()]);
                if !prefixes.contains(&common) {
                    prefixes.push(common);
                    count += 1;
                }
                continue;
            }
        }
        count += 1;
        contents.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>\"{}\"</ETag>\
             <Size>{}</Size><StorageClass>Standard</StorageClass></Contents>",
            xml_escape(key),
            iso8601(object.last_modified),
            hex::encode_upper(Md5::digest(&object.data)),
            object.data.len()
        ));
    }
    let common: String = prefixes
        .iter()
        .map(|p| {
            format!(
                "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                xml_escape(p)
            )
        })
        .collect();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult><Name>{}</Name>\
         <Prefix>{}</Prefix><MaxKeys>{max_keys}</MaxKeys><Delimiter>{}</Delimiter>\
         <IsTruncated>false</IsTruncated><KeyCount>{count}</KeyCount>{contents}{common}</ListBucketResult>",
        xml_escape(&shared.config.bucket),
        xml_escape(prefix),
        xml_escape(delimiter),
    );
    let mut answer = plain(StatusCode::OK, Bytes::from(xml));
    insert(
        answer.reply.headers_mut(),
        "content-type",
        "application/xml",
    );
    answer
}

fn plain(status: StatusCode, body: Bytes) -> Answer {
    let mut reply = Response::new(Full::new(body));
    *reply.status_mut() = status;
    insert(reply.headers_mut(), "x-oss-request-id", &request_id());
    Answer { reply, error: None }
}

/// An OSS-style error answer.
fn error(status: StatusCode, code: &str, message: &str, string_to_sign: Option<&str>) -> Answer {
    let extra = string_to_sign
        .map(|s| format!("<StringToSign>{}</StringToSign>", xml_escape(s)))
        .unwrap_or_default();
    let id = request_id();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{}</Message><RequestId>{id}</RequestId><HostId>fake-oss</HostId>{extra}</Error>",
        xml_escape(message)
    );
    let mut reply = Response::new(Full::new(Bytes::from(xml)));
    *reply.status_mut() = status;
    insert(reply.headers_mut(), "content-type", "application/xml");
    insert(reply.headers_mut(), "x-oss-request-id", &id);
    Answer {
        reply,
        error: Some(code.to_string()),
    }
}

fn insert(headers: &mut hyper::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("FAKE{:020}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Decoded (name, value) pairs of a query string.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |s: &str| percent_decode(&s.replace('+', " ")).unwrap_or_else(|| s.to_string());
            (decode(k), decode(v))
        })
        .collect()
}

/// `%XX` decoding; `None` on a malformed escape or non-UTF-8 result.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `2024-01-02T03:04:05.000Z`, as OSS lists LastModified.
fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("/a%20b/c%2Fd").as_deref(), Some("/a b/c/d"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(
            parse_query("list-type=2&prefix=a%2Fb&uploads"),
            vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), "a/b".to_string()),
                ("uploads".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn formats_iso8601() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(iso8601(t), "2023-11-14T22:13:20.000Z");
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
