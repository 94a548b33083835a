//! The public listener: every connection the load balancer sends us.
//!
//! The accept loop does nothing slow: it takes one non-blocking look at each
//! new connection, counts a probe that has already ended there (see
//! `accept.rs`) and answers an HTTP check that arrived whole and asks to
//! close (see `protocols/http_once.rs`), enforces
//! `limits.max_client_connections` and spawns one task per other
//! connection, instrumented with the peer address.
//! Each task then walks the data path in order (DESIGN.md): PROXY header,
//! source class, per-source limit, detection, and finally one of probe /
//! HTTP health / Thrift forwarding / reject. With `health.tcp_follows_backend`
//! the listening socket itself follows the backends: closed while none is up
//! (so a plain TCP check is refused, not left to the kernel's backlog), bound
//! again when one is.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::classify::{Classifier, Source};
use crate::config::Config;
use crate::detect::{detect, Detected};
use crate::forward::serve_thrift;
use crate::listeners::accept::{first_look, out_of_resources, refuse, PublicListener};
use crate::metrics::{Class, EdgeMetrics, Ending, OTHER_SOURCE};
use crate::protocols::http_health::{serve_http, HealthAnswers};
use crate::protocols::http_once::{self, OneShot};
use crate::protocols::proxy_header::{read_proxy_header, Proxied};
use crate::shutdown::Lifecycle;
use crate::upstream::Upstream;

/// What every connection task shares.
#[derive(Clone)]
pub struct Edge {
    pub config: Arc<Config>,
    pub classifier: Arc<Classifier>,
    pub upstream: Arc<Upstream>,
    pub metrics: EdgeMetrics,
    pub lifecycle: Lifecycle,
    pub health: HealthAnswers,
    pub per_source: PerSource,
}

/// Open connections per client address (`limits.max_connections_per_source`).
#[derive(Clone, Default)]
pub struct PerSource {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Holds one place in a source's count until dropped.
pub struct SourceGuard {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    addr: IpAddr,
}

impl PerSource {
    /// Counts one more connection from `addr`, or `None` when it already has `max`.
    pub fn enter(&self, addr: IpAddr, max: usize) -> Option<SourceGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(addr).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SourceGuard {
            counts: Arc::clone(&self.counts),
            addr,
        })
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.addr);
            }
        }
    }
}

/// Accepts public connections until `edge.lifecycle.stop` fires. Connection
/// tasks are spawned on `tracker` so that shutdown can wait for them.
pub async fn accept_loop(listener: TcpListener, edge: Edge, tracker: TaskTracker) {
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            warn!(error = %e, "public listener has no local address");
            return;
        }
    };
    let listener = match PublicListener::new(listener) {
        Ok(listener) => listener,
        Err(e) => {
            warn!(address = %local, error = %e, "cannot take over the public listener");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(edge.config.limits.max_client_connections));
    let follow = edge.config.health.tcp_follows_backend;
    let mut serving = edge.upstream.serving();
    let stop = edge.lifecycle.stop.clone();
    let mut listener = Some(listener);
    loop {
        if follow && !*serving.borrow_and_update() {
            if listener.take().is_some() {
                info!(address = %local, "no backend is up: closed the public port so TCP checks fail");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = serving.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let current = match &listener {
            Some(l) => l,
            None => {
                match bind_public(local, edge.config.listen.backlog).and_then(PublicListener::new) {
                    Ok(l) => {
                        info!(address = %local, "a backend is up: public port open again");
                        listener.insert(l)
                    }
                    Err(e) => {
                        warn!(address = %local, error = %e, "cannot re-bind the public port; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                        continue;
                    }
                }
            }
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            changed = serving.changed(), if follow => {
                if changed.is_err() { return }
                continue;
            }
            accepted = current.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if out_of_resources(&e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed; pausing 50 ms");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => {
                // One connection's trouble (aborted while queued and the like).
                debug!(error = %e, "accept failed for one connection");
                continue;
            }
        };
        let span = info_span!("conn", client.addr = %peer, class = tracing::field::Empty);
        let mut buf = BytesMut::new();
        // Without a PROXY header to read first, a probe that has already
        // ended, or an HTTP check that arrived whole and asks to close, is
        // dealt with here, not registered nor spawned (unless the answer
        // did not fit the send buffer: `finish_answer` sends the rest).
        if !edge.config.listen.proxy_protocol {
            if let Some(ended) = first_look(&socket, &mut buf) {
                let _entered = span.enter();
                ended_at_accept(&edge, peer, ended);
                continue;
            }
            if let Some(request) = http_once::one_shot(&buf) {
                let unsent = {
                    let _entered = span.enter();
                    answered_at_accept(&edge, &socket, peer, &request)
                };
                if let Some(rest) = unsent {
                    finish_answer(
                        socket,
                        rest,
                        edge.config.timeouts.idle.get(),
                        &tracker,
                        span,
                    );
                }
                continue;
            }
        }
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            edge.metrics.rejected("max_client_connections");
            debug!(%peer, "refused: limits.max_client_connections reached");
            refuse(socket.into());
            continue;
        };
        let stream = match TcpStream::from_std(socket) {
            Ok(stream) => stream,
            Err(e) => {
                edge.metrics.rejected("register_failed");
                warn!(%peer, error = %e, "cannot register an accepted connection with the runtime; closed");
                continue;
            }
        };
        let edge = edge.clone();
        tracker.spawn(
            async move {
                handle(stream, peer, buf, edge).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Binds the public port with `listen.backlog` (tokio's `bind` uses 128,
/// too few for a burst of probes) and `SO_REUSEADDR`, so that it can be bound
/// again at once after `tcp_follows_backend` closed it.
pub fn bind_public(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A connection found ended at accept (see [`first_look`]): counted as
/// detection would have counted it. It held nothing, so neither
/// `limits.max_client_connections` nor the per-source limit applies.
fn ended_at_accept(edge: &Edge, peer: SocketAddr, ended: Detected) {
    if let Some(source) = admit(edge, peer) {
        count_closed(edge, ended, probe_source_name(source));
    }
}

/// An HTTP request that arrived whole with its connection and asks to close
/// it (see [`http_once`]): classified, answered and counted as if hyper had
/// served it. Like an ended probe it holds nothing, so the connection
/// limits do not apply. Returns what a full send buffer left unsent (the
/// caller finishes it); otherwise the connection is closed when `socket`
/// is dropped.
fn answered_at_accept(
    edge: &Edge,
    socket: &std::net::TcpStream,
    peer: SocketAddr,
    request: &OneShot,
) -> Option<Vec<u8>> {
    let source = admit(edge, peer)?;
    let (_, source) = http_classified(edge, probe_source_name(source));
    let answer = edge
        .health
        .decide(&request.method, request.uri.path(), &source);
    let mut bytes = http_once::encode(&answer, request);
    // A new socket's send buffer is empty and an answer is a few hundred
    // bytes: one non-blocking write nearly always takes it whole.
    match std::io::Write::write(&mut &*socket, &bytes) {
        Ok(n) if n == bytes.len() => {
            debug!(status = %answer.status, "http health answered at accept");
            None
        }
        Ok(n) => {
            bytes.drain(..n);
            Some(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(bytes),
        Err(e) => {
            debug!(error = %e, "http health answer at accept not sent; closed");
            None
        }
    }
}

/// The rest of an answer a full send buffer did not take at accept: sent
/// from a task, bounded by `idle` (`timeouts.idle`), then the connection
/// closed. The connection was counted when it was classified and answered;
/// a failure here is only logged, so it is not counted twice.
fn finish_answer(
    socket: std::net::TcpStream,
    rest: Vec<u8>,
    idle: Duration,
    tracker: &TaskTracker,
    span: tracing::Span,
) {
    let mut stream = match TcpStream::from_std(socket) {
        Ok(stream) => stream,
        Err(e) => {
            let _entered = span.enter();
            warn!(error = %e, unsent = rest.len(), "cannot register a connection to finish its health answer; closed");
            return;
        }
    };
    tracker.spawn(
        async move {
            use tokio::io::AsyncWriteExt;
            match tokio::time::timeout(idle, stream.write_all(&rest)).await {
                Ok(Ok(())) => debug!("http health answered at accept, the rest from a task"),
                Ok(Err(e)) => debug!(error = %e, "http health answer not sent; closed"),
                Err(_) => debug!(
                    ?idle,
                    "http health answer not taken within timeouts.idle; closed"
                ),
            }
        }
        .instrument(span),
    );
}

/// An HTTP connection's class (a probe from a probe source, plain HTTP
/// otherwise), recorded on the span and counted, and the source label its
/// health answers are counted under.
fn http_classified(edge: &Edge, probe_source: Option<String>) -> (Class, String) {
    let class = if probe_source.is_some() {
        Class::Probe
    } else {
        Class::Http
    };
    tracing::Span::current().record("class", class.label());
    edge.metrics.classified(class);
    (
        class,
        probe_source.unwrap_or_else(|| OTHER_SOURCE.to_string()),
    )
}

/// The class of `client`'s source, or `None` (counted) when
/// `clients.allow`/`deny` turn it away.
fn admit(edge: &Edge, client: SocketAddr) -> Option<Source> {
    let source = edge.classifier.classify(client.ip());
    if source == Source::Denied {
        tracing::Span::current().record("class", "denied");
        debug!(client = %client, "denied by clients.allow/deny");
        edge.metrics.classified(Class::Denied);
        return None;
    }
    Some(source)
}

fn probe_source_name(source: Source) -> Option<String> {
    match source {
        Source::Probe(name) => Some(name),
        _ => None,
    }
}

/// One public connection, from PROXY header to its end; `buf` holds what
/// [`first_look`] read.
async fn handle(mut stream: TcpStream, peer: SocketAddr, mut buf: BytesMut, edge: Edge) {
    let config = &edge.config;
    let mut client = peer;
    if config.listen.proxy_protocol {
        match read_proxy_header(&mut stream, &mut buf, config.timeouts.proxy_header.get()).await {
            Ok(Proxied::Client(addr)) => client = addr,
            Ok(Proxied::Unknown) => {}
            Ok(Proxied::Local) => {
                let source = match edge.classifier.classify(peer.ip()) {
                    Source::Probe(name) => name,
                    _ => OTHER_SOURCE.to_string(),
                };
                tracing::Span::current().record("class", "probe");
                debug!(source, "PROXY v2 LOCAL health check");
                edge.metrics.probe(&source, Ending::Local);
                return;
            }
            Err(e) => {
                debug!(error = %e, "closing: bad PROXY header");
                edge.metrics.rejected("proxy_header");
                return;
            }
        }
    }
    let Some(source) = admit(&edge, client) else {
        return;
    };
    let Some(_source_guard) = edge
        .per_source
        .enter(client.ip(), config.limits.max_connections_per_source)
    else {
        debug!(client = %client, "closing: limits.max_connections_per_source reached");
        edge.metrics.rejected("per_source_limit");
        if let Ok(socket) = stream.into_std() {
            refuse(socket.into());
        }
        return;
    };
    let detected = detect(
        &mut stream,
        &mut buf,
        config.timeouts.first_byte.get(),
        config.limits.max_frame_bytes,
    )
    .await;
    let span = tracing::Span::current();
    match (detected, probe_source_name(source)) {
        (Detected::Http, source) => {
            let (class, source) = http_classified(&edge, source);
            let _active = edge.metrics.active(class);
            serve_http(stream, buf, source, edge.health.clone()).await;
        }
        (Detected::Thrift { flavor, header }, None) => {
            span.record("class", "thrift");
            debug!(%flavor, method = %header.name, "thrift client");
            edge.metrics.classified(Class::Thrift);
            let _active = edge.metrics.active(Class::Thrift);
            serve_thrift(
                stream,
                buf,
                flavor,
                Arc::clone(&edge.upstream),
                edge.lifecycle.stop.clone(),
            )
            .await;
        }
        (closed, source) => count_closed(&edge, closed, source),
    }
}

/// Counts a connection closed after detection without being served: a
/// probe, anything from a probe source (whatever a health checker sends, it
/// never reaches a backend), or a protocol we do not serve.
fn count_closed(edge: &Edge, detected: Detected, probe_source: Option<String>) {
    let span = tracing::Span::current();
    match (detected, probe_source) {
        (Detected::Probe(ending), source) => {
            span.record("class", "probe");
            let source = source.unwrap_or_else(|| OTHER_SOURCE.to_string());
            debug!(source, ending = ending.label(), "probe");
            edge.metrics.probe(&source, ending);
        }
        (_, Some(source)) => {
            span.record("class", "probe");
            debug!(source, "probe source sent data; closed");
            edge.metrics.probe(&source, Ending::Data);
        }
        (Detected::Reject(reason), None) => {
            span.record("class", "rejected");
            debug!(reason, "closing: not a protocol we serve");
            edge.metrics.rejected(reason);
        }
        (Detected::Http | Detected::Thrift { .. }, None) => {
            // Served by the caller; never counted as closed.
            debug_assert!(false, "count_closed called for a served connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listeners::accept::refuse;
    use crate::shutdown::StopSignal;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// Public and admin listeners bound before any server runs, so that
    /// connections can be queued in the backlog first, and their addresses.
    async fn listeners_for_queued_connections() -> (TcpListener, TcpListener, SocketAddr, SocketAddr)
    {
        let public = bind_public("127.0.0.1:0".parse().expect("addr"), 128).expect("public");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("admin");
        let (public_addr, admin_addr) = (
            public.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        (public, admin, public_addr, admin_addr)
    }

    /// Config of the servers these tests run: a backend that is never up,
    /// one place for a client connection.
    const ONE_PLACE: &str =
        "[[backends]]\naddress = \"127.0.0.1:9\"\n[limits]\nmax_client_connections = 1\n";

    /// The value of the `/metrics` line starting with `series`, from the
    /// admin port at `admin`; `None` when absent.
    fn scrape(admin: SocketAddr, series: &str) -> Option<f64> {
        let mut stream = std::net::TcpStream::connect(admin).expect("admin connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .expect("request");
        let mut page = String::new();
        stream.read_to_string(&mut page).expect("metrics page");
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    /// The refusals for `limits.max_client_connections`: a series that
    /// exists from the start, so its absence fails the test.
    fn refused(admin: SocketAddr) -> f64 {
        let series = "probegate_rejected_total{reason=\"max_client_connections\"}";
        scrape(admin, series).unwrap_or_else(|| panic!("{series} is not on the page"))
    }

    /// Two connections wait in the backlog before probegate accepts: a
    /// silent one, which takes the only place, and one already reset.
    /// Counted at accept, the reset one is a probe; had it waited for a
    /// place of its own it would have been refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_ended_before_it_is_accepted_is_a_probe_even_when_all_places_are_taken() {
        let (public, admin, public_addr, admin_addr) = listeners_for_queued_connections().await;
        let silent = std::net::TcpStream::connect(public_addr).expect("silent connects");
        let reset = std::net::TcpStream::connect(public_addr).expect("reset connects");
        refuse(reset.into());
        let config = Config::parse(ONE_PLACE).expect("config");
        let (stop, stop_signals) = tokio::sync::mpsc::channel(1);
        let server = tokio::spawn(crate::server::run(config, public, admin, stop_signals));
        let rst = "probegate_probes_total{ending=\"rst\",source=\"other\"}";
        let deadline = Instant::now() + Duration::from_secs(5);
        let counted = tokio::task::spawn_blocking(move || loop {
            let probes = scrape(admin_addr, rst).unwrap_or(0.0);
            if probes >= 1.0 || Instant::now() > deadline {
                return (probes, refused(admin_addr));
            }
            std::thread::sleep(Duration::from_millis(10));
        })
        .await
        .expect("scraper");
        drop(silent);
        let _ = stop.send(StopSignal::Interrupt).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert_eq!(
            counted,
            (1.0, 0.0),
            "(rst probes, refused for max_client_connections)"
        );
    }

    #[tokio::test]
    async fn a_whole_health_check_waiting_to_be_accepted_is_answered_even_when_all_places_are_taken(
    ) {
        let (public, admin, public_addr, admin_addr) = listeners_for_queued_connections().await;
        // Both queued before the server runs: the silent one takes the only
        // place, the check is whole in its socket when accepted. The usual
        // path would refuse it (reset, counted max_client_connections).
        let silent = std::net::TcpStream::connect(public_addr).expect("silent connects");
        let mut check = std::net::TcpStream::connect(public_addr).expect("check connects");
        std::io::Write::write_all(&mut check, b"HEAD /health HTTP/1.0\r\n\r\n").expect("write");
        let config = Config::parse(ONE_PLACE).expect("config");
        let (stop, stop_signals) = tokio::sync::mpsc::channel(1);
        let server = tokio::spawn(crate::server::run(config, public, admin, stop_signals));
        let answered = tokio::task::spawn_blocking(move || {
            check
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut answer = Vec::new();
            let read = std::io::Read::read_to_end(&mut check, &mut answer);
            (
                read.map_err(|e| e.kind()),
                String::from_utf8_lossy(&answer).into_owned(),
                refused(admin_addr),
            )
        })
        .await
        .expect("client");
        drop(silent);
        let _ = stop.send(StopSignal::Interrupt).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        let (read, answer, refused) = answered;
        assert!(read.is_ok(), "closed after the answer, not reset: {read:?}");
        // No backend is up (port 9): the truth is 503.
        assert!(
            answer.starts_with("HTTP/1.0 503 Service Unavailable\r\n"),
            "{answer:?}"
        );
        assert_eq!(refused, 0.0, "not refused for max_client_connections");
    }

    /// A connection as the accept loop holds it (non-blocking) and its
    /// client, which reads only when the test says.
    fn accepted_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .expect("client connects");
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("non-blocking");
        // Small buffers on both sides, so that a rest of MORE_THAN_BUFFERS
        // cannot fit in them whatever the host's defaults.
        rustix::net::sockopt::set_socket_send_buffer_size(&accepted, 64 * 1024).expect("SO_SNDBUF");
        rustix::net::sockopt::set_socket_recv_buffer_size(&client, 64 * 1024).expect("SO_RCVBUF");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (client, accepted)
    }

    /// Everything `client` reads until the connection closes (its read
    /// timeout bounds each wait).
    async fn read_to_close(mut client: std::net::TcpStream) -> std::io::Result<Vec<u8>> {
        tokio::task::spawn_blocking(move || {
            let mut received = Vec::new();
            client.read_to_end(&mut received).map(|_| received)
        })
        .await
        .expect("reader")
    }

    /// Far more than the pair's socket buffers hold, so the task must wait
    /// for its reader many times (an answer's rest is far smaller; the path
    /// is the same).
    const MORE_THAN_BUFFERS: usize = 4 * 1024 * 1024;

    #[tokio::test]
    async fn the_rest_of_an_answer_left_unsent_at_accept_is_sent_whole_then_the_connection_closed()
    {
        let (client, accepted) = accepted_pair();
        let rest: Vec<u8> = (0..MORE_THAN_BUFFERS).map(|i| (i % 251) as u8).collect();
        let tracker = TaskTracker::new();
        let idle = Duration::from_secs(5);
        finish_answer(
            accepted,
            rest.clone(),
            idle,
            &tracker,
            tracing::Span::none(),
        );
        tracker.close();
        let received = read_to_close(client)
            .await
            .expect("read to the close, within 5 s");
        assert_eq!(received.len(), rest.len(), "bytes received");
        assert!(received == rest, "the bytes arrive in order, unchanged");
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the task ended once the rest was sent");
    }

    #[tokio::test]
    async fn a_client_that_takes_none_of_the_rest_is_closed_after_timeouts_idle() {
        let (client, accepted) = accepted_pair();
        let tracker = TaskTracker::new();
        let idle = Duration::from_millis(200);
        let started = Instant::now();
        finish_answer(
            accepted,
            vec![b'x'; MORE_THAN_BUFFERS],
            idle,
            &tracker,
            tracing::Span::none(),
        );
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the task gave up after timeouts.idle (200 ms), not waiting for the reader");
        assert!(
            started.elapsed() >= idle,
            "gave up after {:?}, before timeouts.idle ({idle:?})",
            started.elapsed()
        );
        // Closed, not left open: what was queued arrives, then the end.
        match read_to_close(client).await.map(|received| received.len()) {
            Ok(n) => assert!(n < MORE_THAN_BUFFERS, "{n} bytes: the rest was cut short"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }

    #[test]
    fn per_source_counts_enter_and_leave() {
        let per_source = PerSource::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = per_source.enter(a, 2).expect("first");
        let _second = per_source.enter(a, 2).expect("second");
        assert!(
            per_source.enter(a, 2).is_none(),
            "third from the same source"
        );
        assert!(per_source.enter(b, 2).is_some(), "another source is served");
        drop(first);
        assert!(per_source.enter(a, 2).is_some(), "a place was freed");
    }
}
