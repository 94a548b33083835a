//! probegate-bench: the same workloads straight to a Thrift backend, through
//! HAProxy (plain `mode tcp` and its inspect-delay configuration) and through
//! probegate, in one run, on one machine.
//!
//! It exists to give users and the project an honest, reproducible answer to
//! "what does putting probegate in front cost, and what does it buy, compared
//! with HAProxy?" — measured, not asserted.
//!
//! # Layout
//!
//! - `options`: the command line (quick and full modes, filters).
//! - `machine`: pinning, `/dev/cpu_dma_latency`, the file-descriptor limit, the
//!   clock tick: everything done to the machine for a run, and said in the output.
//! - `procstat`: CPU time and RSS of a process from `/proc`.
//! - `child`: starting a server, reading its `listening` line, stopping it.
//! - `responder`: the minimal in-bench Thrift backend (no storage), run as a
//!   pinned child process of this binary.
//! - `haproxy`: HAProxy's generated configurations (three) and its process.
//! - `answerer`, `answerer_uring`, `uring_buffers`: the reference floors, a
//!   server answering pings itself on tokio over epoll and on io_uring.
//! - `deploy`: one target (direct / haproxy-tcp / haproxy-inspect /
//!   haproxy-splice / probegate / the two answerers) with its own backend.
//! - `client`: a blocking Thrift client over one TCP connection.
//! - `scrape`: reading `uploader_connections_accepted_total` from a backend.
//! - `load`: closed-loop `ping`/`upload` runs measured over a window.
//! - `probes`: the probe storm (RST, FIN, HTTP) at a fixed rate.
//! - `idle`: thousands of silent client connections held open.
//! - `incident`: the production incident, replayed against every target.
//! - `payload`: valid PNG images of a chosen size for `upload`.
//! - `stats`: percentiles, medians and ranges.
//! - `report`: records, the stdout table, JSON lines.
//! - `goals`: the targets checked against the medians.
//! - `chart`: the SVG chart.
//! - `measure`: one measurement of one target, as a record of metrics.
//! - `run`: the orchestration of workloads, repetitions and targets.

#![deny(unsafe_code)]

pub mod answerer;
// io_uring's submissions hand the kernel raw buffer pointers: the unsafe
// code of this crate is in these two modules.
#[allow(unsafe_code)]
pub mod answerer_uring;
pub mod chart;
pub mod child;
pub mod client;
pub mod deploy;
pub mod goals;
pub mod haproxy;
pub mod idle;
pub mod incident;
pub mod load;
pub mod machine;
pub mod measure;
pub mod options;
pub mod payload;
pub mod probes;
pub mod procstat;
pub mod report;
pub mod responder;
pub mod run;
pub mod scrape;
pub mod stats;
pub mod upload_call;
#[allow(unsafe_code)]
pub mod uring_buffers;
