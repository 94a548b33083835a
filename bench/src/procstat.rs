//! CPU time and resident memory of a server process, read from `/proc`.
//!
//! `/proc/PID/stat` sums the times of all the process's threads, so one
//! reading before and one after a window give the CPU the whole server spent
//! on it (in clock ticks, converted with `getconf CLK_TCK`).

use std::fs;

/// Why a `/proc` reading failed; carries the pid and the text seen.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}/{file}: {source}")]
    Read {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("unexpected /proc/{pid}/{file} content: {text:?}")]
    Format {
        pid: u32,
        file: &'static str,
        text: String,
    },
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, ProcError> {
    let text =
        fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| ProcError::Read {
            pid,
            file: "stat",
            source,
        })?;
    parse_stat_ticks(&text).ok_or_else(|| ProcError::Format {
        pid,
        file: "stat",
        text: text.chars().take(200).collect(),
    })
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, ProcError> {
    let text =
        fs::read_to_string(format!("/proc/{pid}/status")).map_err(|source| ProcError::Read {
            pid,
            file: "status",
            source,
        })?;
    parse_status_rss(&text).ok_or_else(|| ProcError::Format {
        pid,
        file: "status",
        text: text.chars().take(200).collect(),
    })
}

/// utime (field 14) + stime (field 15) of a `/proc/PID/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS:  1234 kB` of `/proc/PID/status`, in bytes.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next()? {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

/// A CPU reading of one process at the start of a window.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    pid: u32,
    ticks: u64,
}

impl CpuMark {
    pub fn take(pid: u32) -> Option<CpuMark> {
        cpu_ticks(pid).ok().map(|ticks| CpuMark { pid, ticks })
    }

    /// Seconds of CPU used since the mark, or `None` if the process is gone.
    pub fn seconds_since(&self, clk_tck: f64) -> Option<f64> {
        let now = cpu_ticks(self.pid).ok()?;
        Some(now.saturating_sub(self.ticks) as f64 / clk_tck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1290 0 0 0 37 12 0 0 20 0 3 0 123 456 789";
        assert_eq!(parse_stat_ticks(line), Some(49));
        assert_eq!(parse_stat_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_rss_in_bytes() {
        let text = "Name:\tprobegate\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(text), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
        assert_eq!(parse_status_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_ok());
        assert!(rss_bytes(pid).expect("own rss") > 0);
    }
}
