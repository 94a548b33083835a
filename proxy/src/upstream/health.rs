//! Active health checks: a real `ping()` call to every backend every
//! `health.interval`, through the same slots and pool as client calls.
//!
//! A check that finds all of its backend's slots busy does not queue behind
//! real traffic: if a real call on that backend got a reply within the last
//! interval the backend is evidently serving (`busy_ok`); otherwise the check
//! waits for a slot as that backend's priority waiter, up to `health.timeout`.
//! Results feed the rise/fall state in [`Backend::record`]; only state flips
//! are logged.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TMessageIdentifier, TMessageType,
    TOutputProtocol, TStructIdentifier,
};
use tokio_util::sync::CancellationToken;

use super::call::{exchange, Outgoing};
use super::Upstream;
use crate::protocols::thrift::{Flavor, Protocol, Transport};

/// The result of one active check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    Success,
    /// All slots busy, but a real call succeeded within the last interval.
    BusyOk,
    Failure(String),
}

impl CheckResult {
    pub fn label(&self) -> &'static str {
        match self {
            CheckResult::Success => "success",
            CheckResult::BusyOk => "busy_ok",
            CheckResult::Failure(_) => "failure",
        }
    }
}

/// Seqids of health-check calls; any value is fine, distinct ones help
/// when reading captures.
static NEXT_SEQID: AtomicI32 = AtomicI32::new(1);

/// A whole `ping()` call in `flavor`, built with the `thrift` crate's own
/// protocol writers.
pub fn ping_call(flavor: Flavor, seqid: i32) -> thrift::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(32);
    {
        let mut proto: Box<dyn TOutputProtocol + '_> = match flavor.protocol {
            Protocol::Binary => Box::new(TBinaryOutputProtocol::new(&mut body, true)),
            Protocol::Compact => Box::new(TCompactOutputProtocol::new(&mut body)),
        };
        proto.write_message_begin(&TMessageIdentifier::new("ping", TMessageType::Call, seqid))?;
        proto.write_struct_begin(&TStructIdentifier::new("ping_args"))?;
        proto.write_field_stop()?;
        proto.write_struct_end()?;
        proto.write_message_end()?;
        proto.flush()?;
    }
    Ok(match flavor.transport {
        Transport::Buffered => body,
        Transport::Framed => {
            let mut framed = Vec::with_capacity(body.len() + 4);
            framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
            framed.extend_from_slice(&body);
            framed
        }
    })
}

/// Runs one active check of backend `index`.
pub async fn check(upstream: &Arc<Upstream>, index: usize) -> CheckResult {
    let backend = &upstream.backends[index];
    let health = &upstream.config.health;
    let slot = match upstream.scheduler.try_acquire_on(index) {
        Some(slot) => slot,
        None => {
            if backend.replied_within(health.interval.get()) {
                return CheckResult::BusyOk;
            }
            match upstream
                .scheduler
                .acquire_on(index, health.timeout.get())
                .await
            {
                Some(slot) => slot,
                None if backend.replied_within(health.interval.get()) => {
                    return CheckResult::BusyOk
                }
                None => {
                    return CheckResult::Failure(format!(
                    "all {} slots busy for health.timeout={} with no reply in the last interval",
                    backend.max_connections, health.timeout
                ))
                }
            }
        }
    };
    let seqid = NEXT_SEQID.fetch_add(1, Ordering::Relaxed);
    let call = match ping_call(backend.flavor, seqid) {
        Ok(call) => call,
        Err(e) => return CheckResult::Failure(format!("cannot encode ping: {e}")),
    };
    let out = Outgoing::new(call.into());
    match exchange(upstream, &slot, &out, false, health.timeout.get()).await {
        Ok(Some(reply))
            if reply.header.kind == TMessageType::Reply && reply.header.name == "ping" =>
        {
            CheckResult::Success
        }
        Ok(Some(reply)) => CheckResult::Failure(format!(
            "unexpected reply to ping: {:?} {:?}",
            reply.header.kind, reply.header.name
        )),
        Ok(None) => CheckResult::Failure("no reply to ping".to_string()),
        Err(e) => CheckResult::Failure(e.to_string()),
    }
}

/// Checks backend `index` every `health.interval` until `shutdown`.
pub async fn run(upstream: Arc<Upstream>, index: usize, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(upstream.config.health.interval.get());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = check(&upstream, index) => result,
        };
        upstream.record_check(index, &result);
    }
}

/// Closes idle pooled connections as they pass `forwarding.pool_idle`.
pub async fn reap(upstream: Arc<Upstream>, shutdown: CancellationToken) {
    let pool_idle = upstream.config.forwarding.pool_idle.get();
    loop {
        let next = upstream
            .backends
            .iter()
            .filter_map(|b| b.pool.reap())
            .min()
            .unwrap_or_else(|| std::time::Instant::now() + pool_idle);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::thrift::{delimit, Delimit};

    #[test]
    fn ping_call_is_one_whole_call_in_every_flavor() {
        for flavor in Flavor::ALL {
            let bytes = ping_call(flavor, 7).expect("encodes");
            match delimit(flavor, &bytes, 1 << 20).expect("delimits") {
                Delimit::Complete { len, header } => {
                    assert_eq!(len, bytes.len(), "{flavor}");
                    assert_eq!(header.name, "ping");
                    assert_eq!(header.kind, TMessageType::Call);
                    assert_eq!(header.seqid, 7);
                }
                other => panic!("{flavor}: {other:?}"),
            }
        }
    }
}
