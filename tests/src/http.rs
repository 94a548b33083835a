//! A tiny blocking HTTP/1.1 client for tests, built on hyper's client
//! connection API.
//!
//! Each call opens one connection, sends one request and reads the whole
//! response under a deadline; that is all the tests need (admin endpoints,
//! fetching stored objects, health checks through the proxy). For
//! keep-alive or raw-socket behaviour tests write bytes on a `TcpStream`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Bound on one whole request (connect, send, read the body).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header as a string, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET http://addr/path`.
pub fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    request(Method::GET, addr, path, &[], Bytes::new())
}

/// `HEAD http://addr/path`.
pub fn head(addr: SocketAddr, path: &str) -> Result<Response> {
    request(Method::HEAD, addr, path, &[], Bytes::new())
}

/// `GET` of an absolute `http://IP:PORT/path` URL (e.g. an upload's URL).
/// Only loopback hosts are allowed: tests send traffic nowhere else.
pub fn get_url(url: &str) -> Result<Response> {
    let (addr, path) = split_url(url)?;
    get(addr, &path)
}

/// Splits `http://IP:PORT/path?query` into the address and the path.
pub fn split_url(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("URL {url:?} does not name IP:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!("refusing to send test traffic to non-loopback {addr} (from {url:?})");
    }
    Ok((addr, path))
}

/// Any request, with extra headers and a body.
pub fn request(
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")?;
    let fut = send(method.clone(), addr, path, headers, body);
    runtime
        .block_on(async { tokio::time::timeout(HTTP_TIMEOUT, fut).await })
        .map_err(|_| {
            anyhow!("{method} http://{addr}{path}: no complete response within {HTTP_TIMEOUT:?}")
        })?
        .with_context(|| format!("{method} http://{addr}{path}"))
}

async fn send(
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(HeaderName::try_from(*name)?, HeaderValue::try_from(*value)?);
    }
    let req = builder.body(Full::new(body))?;
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_loopback_urls_only() {
        let (addr, path) = split_url("http://127.0.0.1:8080/a/b.png").unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(path, "/a/b.png");
        assert_eq!(split_url("http://127.0.0.1:1").unwrap().1, "/");
        assert!(split_url("http://10.0.0.1:80/x").is_err());
        assert!(split_url("https://127.0.0.1:80/x").is_err());
        assert!(split_url("http://example.com/x").is_err());
    }
}
