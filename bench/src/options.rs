//! The command line: a quick mode for a first look (about two minutes), a
//! full mode for numbers worth publishing, and filters to rerun one part.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::Writes;

/// Side-by-side benchmark: direct, HAProxy (tcp and inspect-delay) and
/// probegate in front of a thread-per-connection Thrift backend.
#[derive(Debug, Clone, Parser)]
#[command(name = "probegate-bench", version)]
pub struct Options {
    /// One repetition of shorter windows (about two minutes in all).
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of each workload (default: 1 with --quick, 3 otherwise).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: Option<u32>,
    /// Seconds of measurement per workload, target and repetition, from 0.2
    /// to 600 (default: 2 with --quick, 5 otherwise).
    #[arg(long, value_parser = window_seconds)]
    pub window: Option<f64>,
    /// Probes per second in the probe storm (RST, FIN and HTTP in turn).
    #[arg(long, default_value_t = 5000)]
    pub probe_rate: u32,
    /// Silent client connections held in the idle-clients workload.
    #[arg(long, default_value_t = 10_000)]
    pub idle_clients: usize,
    /// Only these targets (comma separated): direct, haproxy-tcp,
    /// haproxy-inspect, haproxy-splice (uploads only), probegate, answerer,
    /// answerer-uring (pings only).
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Only these workloads (comma separated): ping-1, ping-32, ping-32-w10,
    /// upload-64k, upload-1m, upload-1m-nostore, probe-storm, idle-clients, incident.
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Do not run `cargo build --release -p uploader -p probegate` first.
    #[arg(long)]
    pub no_build: bool,
    /// Where the `uploader` and `probegate` binaries are (default:
    /// target/release of this workspace).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where results.jsonl, bench.svg and the servers' logs go.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not pin the load generator and the servers to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Do not hold /dev/cpu_dma_latency at 0 (to see what it changes); the
    /// `load` and `storm` subcommands hold it too unless this is given.
    #[arg(long, global = true)]
    pub no_latency_hold: bool,
    /// How the load generator writes a call: `one` write (like Thrift's
    /// C++, Java, Python and Go clients) or `two` (length, then message,
    /// like the Rust thrift crate's framed writer on a bare socket).
    #[arg(long, global = true, value_enum, default_value_t = Writes::One)]
    pub client_writes: Writes,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Other roles of this binary: the responder (started by the bench itself)
/// and re-reporting a finished run.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The minimal Thrift backend: `workers` threads, one connection each.
    Responder {
        /// Worker threads, each serving one connection at a time.
        #[arg(long, default_value_t = 64)]
        workers: usize,
    },
    /// The `answerer` target: answers every call itself on probegate's runtime,
    /// with no backend (what a proxy's client side alone costs).
    Answerer {
        /// Run on one io_uring instead of tokio over epoll (the
        /// `answerer-uring` target).
        #[arg(long)]
        io_uring: bool,
    },
    /// Drive closed-loop load at an already running server (for profiling a
    /// proxy under valgrind, say) and print what it measured.
    Load {
        /// The Thrift address to call (framed, binary).
        addr: std::net::SocketAddr,
        /// Client connections.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds of measurement.
        #[arg(long, default_value_t = 10.0, value_parser = seconds)]
        secs: f64,
        /// Upload a PNG of this many bytes instead of calling ping.
        #[arg(long)]
        upload: Option<usize>,
    },
    /// Send a probe storm (RST, FIN, HTTP in turn) at an already running
    /// server, without calls, and print what was sent (for profiling what
    /// probes alone cost a proxy).
    Storm {
        /// The address to probe.
        addr: std::net::SocketAddr,
        /// Probes per second, all kinds together.
        #[arg(long, default_value_t = 5000)]
        rate: u32,
        /// Seconds of probing.
        #[arg(long, default_value_t = 10.0, value_parser = seconds)]
        secs: f64,
    },
    /// Print the tables and redraw the chart from a results.jsonl.
    Report {
        /// The JSON lines written by a run.
        jsonl: PathBuf,
        /// Where to draw the chart (default: beside the JSON lines).
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

/// The longest `--secs`.
const MAX_SECONDS: f64 = 3600.0;
/// The shortest and longest `--window`: shorter ones measure too few calls
/// to mean anything, and a full run has dozens of windows.
const WINDOW_SECONDS: (f64, f64) = (0.2, 600.0);

/// A number of seconds: above zero and at most [`MAX_SECONDS`].
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= MAX_SECONDS => Ok(secs),
        Ok(secs) => Err(format!(
            "{secs} is not a number of seconds above 0 and at most {MAX_SECONDS}"
        )),
        Err(e) => Err(format!("{text:?} is not a number of seconds: {e}")),
    }
}

/// A measurement window in seconds, within [`WINDOW_SECONDS`].
fn window_seconds(text: &str) -> Result<f64, String> {
    let (shortest, longest) = WINDOW_SECONDS;
    match seconds(text)? {
        secs if (shortest..=longest).contains(&secs) => Ok(secs),
        secs => Err(format!(
            "a window of {secs} s is outside {shortest}–{longest} s"
        )),
    }
}

impl Options {
    pub fn reps(&self) -> u32 {
        self.reps.unwrap_or(if self.quick { 1 } else { 3 })
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.window.unwrap_or(if self.quick { 2.0 } else { 5.0 }))
    }

    /// The incident replay's length: long enough for several probe rounds
    /// (every 2 s) and a few dozen real pings (every 200 ms).
    pub fn incident_window(&self) -> Duration {
        if self.quick {
            Duration::from_secs(6)
        } else {
            Duration::from_secs(10)
        }
    }

    pub fn wants_target(&self, name: &str) -> bool {
        self.targets.is_empty() || self.targets.iter().any(|t| t == name)
    }

    pub fn wants_workload(&self, name: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|w| w == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_above_zero_and_bounded() {
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert_eq!(seconds("3600"), Ok(3600.0));
        for bad in ["NaN", "inf", "0", "-1", "3601", "soon"] {
            let err = seconds(bad).expect_err(bad);
            assert!(err.contains("seconds"), "{bad}: {err}");
        }
    }

    #[test]
    fn windows_and_repetitions_out_of_range_are_refused_not_clamped() {
        assert_eq!(window_seconds("0.2"), Ok(0.2));
        assert_eq!(window_seconds("600"), Ok(600.0));
        for bad in ["0.1", "601", "NaN"] {
            let err = window_seconds(bad).expect_err(bad);
            assert!(err.contains(bad) || err.contains("NaN"), "{bad}: {err}");
        }
        let parse = |args: &[&str]| Options::try_parse_from([&["probegate-bench"], args].concat());
        let window = parse(&["--window", "0.05"])
            .expect_err("too short")
            .to_string();
        assert!(
            window.contains("a window of 0.05 s is outside 0.2–600 s"),
            "{window}"
        );
        let reps = parse(&["--reps", "0"])
            .expect_err("no repetitions")
            .to_string();
        assert!(reps.contains("--reps"), "{reps}");
        assert_eq!(
            parse(&["--reps", "2", "--window", "1.5"])
                .expect("fine")
                .reps(),
            2
        );
    }
}
