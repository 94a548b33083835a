//! Reading the servers' admin pages: a backend's connection counters from
//! its Prometheus `/metrics`, and whether probegate is `/ready`.
//!
//! The bench asks every backend (the real `uploader` and the in-bench
//! responder alike) for `uploader_connections_accepted_total`: the number of
//! connections that reached it is the whole point of the probe, idle and
//! incident workloads (the responder also counts those that ended without a
//! call). Before measuring through probegate it waits for its
//! `/ready` (a backend marked up), or the first calls would be refused. A tiny
//! HTTP/1.0 GET is enough; no client library needed for a few requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The counter every backend exposes for connections it accepted.
pub const ACCEPTED: &str = "uploader_connections_accepted_total";
/// The responder's count of connections that ended without a call: probes
/// that reached the backend.
pub const WITHOUT_CALLS: &str = "responder_connections_without_calls_total";
/// Bound on connecting to and reading from an admin listener.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the size of a metrics page.
const MAX_PAGE: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("GET http://{addr}{path}: {source}")]
    Io {
        addr: SocketAddr,
        path: &'static str,
        source: std::io::Error,
    },
}

/// The whole response (status line, headers, body) to `GET path` on `addr`.
fn get(addr: SocketAddr, path: &'static str) -> Result<String, ScrapeError> {
    let io = |source| ScrapeError::Io { addr, path, source };
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: bench\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut page = String::new();
    stream
        .take(MAX_PAGE)
        .read_to_string(&mut page)
        .map_err(io)?;
    Ok(page)
}

/// Whether `GET /ready` on `addr` answers 200.
pub fn ready(addr: SocketAddr) -> Result<bool, ScrapeError> {
    Ok(is_ok(&get(addr, "/ready")?))
}

/// Whether a response's status line says 200.
fn is_ok(response: &str) -> bool {
    response
        .lines()
        .next()
        .and_then(|status| status.split_whitespace().nth(1))
        == Some("200")
}

/// `addr`'s whole `/metrics` response, for reading several samples from
/// one fetch with [`sample`].
pub fn metrics_page(addr: SocketAddr) -> Result<String, ScrapeError> {
    get(addr, "/metrics")
}

/// Finds `name value` (or `name{} value`) in a Prometheus text page.
pub fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = rest.strip_prefix("{}").unwrap_or(rest);
            if !rest.starts_with([' ', '\t']) {
                return None;
            }
            rest.split_whitespace().next()?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_status_line_is_ready() {
        assert!(is_ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nready"));
        assert!(!is_ok(
            "HTTP/1.1 503 Service Unavailable\r\n\r\nno backend up: 200"
        ));
        assert!(!is_ok(""));
    }

    #[test]
    fn finds_the_sample_and_not_its_lookalikes() {
        let page = "HTTP/1.0 200 OK\r\n\r\n# HELP uploader_connections_accepted_total x\n\
                    # TYPE uploader_connections_accepted_total counter\n\
                    uploader_connections_accepted_total_extra 9\n\
                    uploader_connections_accepted_total 42\n";
        assert_eq!(sample(page, ACCEPTED), Some(42.0));
        assert_eq!(
            sample("uploader_connections_accepted_total{} 7\n", ACCEPTED),
            Some(7.0)
        );
        assert_eq!(sample("other 1\n", ACCEPTED), None);
        assert_eq!(
            sample("uploader_connections_accepted_total NaNx\n", ACCEPTED),
            None
        );
    }
}
