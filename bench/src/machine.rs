//! What the bench does to the machine for the length of a run, and the notes
//! that say so in the output.
//!
//! On 2-vCPU virtual machines the wake-up latency of an idle vCPU dominates
//! small-RPC timings, so the bench holds `/dev/cpu_dma_latency` open with 0
//! written to it (idle CPUs keep polling while it is open), pins the load
//! generator to CPU 0 and every server to CPU 1 so they do not steal each
//! other's core, and raises its file-descriptor limit so that 10,000 idle
//! clients fit (children inherit the raised limit).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::process::Command;

/// CPU given to the load generator (this process and its threads).
pub const LOAD_CPU: usize = 0;
/// CPU given to every server (backends and proxies) through `taskset`.
pub const SERVER_CPU: usize = 1;
/// The file-descriptor limit asked for: room for 10,000 client sockets here
/// plus both sides of 10,000 proxied connections in a child.
const WANTED_NOFILE: u64 = 65_536;

/// The state set up for a run. Dropping it closes `/dev/cpu_dma_latency`,
/// which gives the CPUs back their idle states.
pub struct Machine {
    /// Whether servers are started under `taskset -c 1`.
    pub pin_servers: bool,
    /// Kernel clock ticks per second, for `/proc/PID/stat` times.
    pub clk_tck: f64,
    /// Human-readable lines describing pinning, latency and limits.
    pub notes: Vec<String>,
    /// Held open for the run: the latency request lasts while it is open.
    _dma_latency: Option<File>,
}

impl Machine {
    /// Applies the run's settings; nothing here is fatal, each outcome is
    /// noted instead.
    pub fn setup(pin: bool, hold_latency: bool) -> Machine {
        let mut notes = Vec::new();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let taskset = Command::new("taskset")
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let pin_servers = pin && cpus > SERVER_CPU && taskset;
        if !pin {
            notes.push("pinning: off (--no-pin)".to_string());
        } else if cpus <= SERVER_CPU {
            notes.push(format!(
                "pinning: off ({cpus} CPU available, need 2: load generator and servers share it)"
            ));
        } else if !taskset {
            notes.push("pinning: off (taskset not found; install util-linux)".to_string());
        } else {
            let pinned_self =
                core_affinity::set_for_current(core_affinity::CoreId { id: LOAD_CPU });
            notes.push(format!(
                "pinning: load generator on CPU {LOAD_CPU}{} ; backends and proxies on CPU {SERVER_CPU} (taskset -c {SERVER_CPU}); {cpus} CPUs seen",
                if pinned_self { " (sched_setaffinity)" } else { " FAILED to pin, running unpinned" }
            ));
        }

        let (dma_latency, note) = latency_hold(hold_latency);
        notes.push(note);

        notes.push(raise_nofile());
        if let Some(busy) = cpu_busy(std::time::Duration::from_millis(500)) {
            notes.push(if busy >= 0.10 {
                format!("CPUs {:.0}% busy before the run: other processes are competing for them, expect noisy numbers", busy * 100.0)
            } else {
                format!("CPUs {:.0}% busy before the run (idle machine)", busy * 100.0)
            });
        }

        let clk_tck = clock_ticks();
        notes.push(format!(
            "cpu time: utime+stime from /proc/PID/stat over each window, {clk_tck} ticks/s (getconf CLK_TCK)"
        ));
        Machine {
            pin_servers,
            clk_tck,
            notes,
            _dma_latency: dma_latency,
        }
    }
}

/// Holds `/dev/cpu_dma_latency` at 0 unless `hold` is false
/// (`--no-latency-hold`), with the line that says what happened. The
/// latency request lasts while the returned file stays open. The `load` and
/// `storm` subcommands hold it too, so hand-run A/B comparisons measure
/// what a full run does.
pub fn latency_hold(hold: bool) -> (Option<File>, String) {
    if !hold {
        return (
            None,
            "cpu_dma_latency: not held (--no-latency-hold); idle CPUs may sleep deeply and wake slowly"
                .to_string(),
        );
    }
    // The kernel keeps CPUs out of deep idle states while the file is
    // open with 0 (an `i32`) written to it.
    match OpenOptions::new().write(true).open("/dev/cpu_dma_latency") {
        Ok(mut file) => match file.write_all(&0i32.to_ne_bytes()) {
            Ok(()) => (
                Some(file),
                "cpu_dma_latency: holding /dev/cpu_dma_latency open with 0 for the run (idle CPUs poll instead of sleeping)"
                    .to_string(),
            ),
            Err(e) => (
                None,
                format!(
                    "cpu_dma_latency: could not write 0 to /dev/cpu_dma_latency ({e}); expect more run-to-run spread"
                ),
            ),
        },
        Err(e) => (
            None,
            format!(
                "cpu_dma_latency: could not open /dev/cpu_dma_latency ({e}; needs root); expect more run-to-run spread"
            ),
        ),
    }
}

impl Machine {
    /// The command that starts `program` on the server CPU (or unpinned),
    /// tied to the thread that spawns it: the server gets SIGTERM from the
    /// kernel when that thread ends, so a bench killed outright (SIGKILL,
    /// which `child::stop_servers_on_signals` cannot see) leaves nothing
    /// loading the CPU the next run measures on. Runs start their servers
    /// from the main thread.
    pub fn server_command(&self, program: &std::path::Path) -> Command {
        let mut command = if self.pin_servers {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(SERVER_CPU.to_string()).arg(program);
            command
        } else {
            Command::new(program)
        };
        tied_child::tied_to_this_process(&mut command);
        command
    }
}

/// Raises RLIMIT_NOFILE (soft, and hard where permitted) for this process and
/// so for every child it starts.
fn raise_nofile() -> String {
    use rlimit::Resource;
    let before = Resource::NOFILE.get().unwrap_or((0, 0));
    // Root may raise the hard limit too; others get their hard limit.
    let raised = Resource::NOFILE
        .set(WANTED_NOFILE.max(before.0), WANTED_NOFILE.max(before.1))
        .is_ok();
    if !raised {
        let _ = rlimit::increase_nofile_limit(WANTED_NOFILE);
    }
    let after = Resource::NOFILE.get().unwrap_or(before);
    let hard_note = if after.1 < WANTED_NOFILE {
        format!(
            "; the hard limit {} could not be raised here (needs CAP_SYS_RESOURCE), so HAProxy's maxconn is capped to fit it",
            after.1
        )
    } else {
        String::new()
    };
    format!(
        "open files: RLIMIT_NOFILE {}/{} -> {}/{} (soft/hard), inherited by every server{hard_note}",
        before.0, before.1, after.0, after.1
    )
}

/// The current soft RLIMIT_NOFILE (what children inherit).
pub fn nofile_limit() -> u64 {
    rlimit::Resource::NOFILE.get().map(|l| l.0).unwrap_or(1024)
}

/// The fraction of all CPUs' time spent busy over `span`, from two
/// readings of `/proc/stat` (the load average would still show the
/// previous run's own load).
fn cpu_busy(span: std::time::Duration) -> Option<f64> {
    let first = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    std::thread::sleep(span);
    let second = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let total = second.0.checked_sub(first.0)?;
    let idle = second.1.checked_sub(first.1)?;
    (total > 0).then(|| 1.0 - idle as f64 / total as f64)
}

/// (total, idle + iowait) jiffies of the `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((values.iter().sum(), idle))
}

/// `getconf CLK_TCK`, or the Linux default of 100 when it cannot be run.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_line() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_proc_stat(text), Some((1000, 850)));
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
    }
}
