//! Wires the parts together and runs them until shutdown.
//!
//! `run` takes listeners that are already bound (so `main` can report the
//! real addresses and tests can bind `127.0.0.1:0`) and a shutdown future.
//! The Thrift pool lives on std threads; the admin listener and the storage
//! I/O live on the tokio runtime `run` is called from.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::{self, Admin};
use crate::config::Config;
use crate::connection::ConnectionContext;
use crate::handler::Handler;
use crate::metrics::Metrics;
use crate::pool::{self, SocketOptions};
use crate::storage::Storage;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the Thrift worker pool: {0}")]
    Pool(#[from] std::io::Error),
}

/// Serves Thrift on `thrift` and HTTP on `admin` until `shutdown` completes,
/// then stops accepting and returns. Connections still being served are
/// abandoned to the worker threads; a process exits right after.
///
/// `storage` should already know the admin address (`use_admin_addr`).
pub async fn run(
    config: &Config,
    storage: Storage,
    thrift: std::net::TcpListener,
    admin: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Metrics::new(config.server.workers);
    let handler = Handler::new(
        storage.clone(),
        metrics.clone(),
        tokio::runtime::Handle::current(),
        config.server.max_upload_bytes,
        config.storage.key_prefix.clone(),
    );
    let ctx = Arc::new(ConnectionContext {
        handler,
        metrics: metrics.clone(),
        flavor: config.server.flavor(),
        max_frame: config.server.max_frame_bytes(),
    });
    let options = SocketOptions {
        read_timeout: config.server.read_timeout(),
        write_timeout: config.server.write_timeout(),
    };
    let mut pool = pool::start(thrift, config.server.workers, options, ctx)?;
    tracing::info!(
        thrift = %pool.local_addr(),
        workers = config.server.workers,
        flavor = %config.server.flavor(),
        read_timeout = %config.server.read_timeout,
        storage = ?storage.kind(),
        public_base_url = storage.public_base_url(),
        "serving"
    );

    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin_state = Arc::new(Admin::new(storage, metrics));
    let admin_task = tokio::spawn(admin::serve(
        admin,
        admin_state,
        config.admin.timeout.get(),
        admin_stopped,
    ));

    shutdown.await;
    tracing::info!("shutting down: no new connections");
    let _ = stop_admin.send(true);
    // Joining the accept thread blocks briefly; keep it off the runtime.
    let _ = tokio::task::spawn_blocking(move || pool.stop()).await;
    let _ = admin_task.await;
    Ok(())
}
