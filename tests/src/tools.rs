//! External tools some tests need, and what to do when one is missing.
//!
//! Locally a missing tool skips the test with a clear `SKIPPED:` line, so a
//! contributor without the Debian packages can still run everything else.
//! Under CI (`CI=true`) a missing tool is a failure: `.ci/run` installs them,
//! and a silently skipped interop test would be a test that cannot fail.

use std::path::Path;
use std::process::{Command, Stdio};

/// A tool a test depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `thrift` (Apache Thrift compiler), for generating the Python client.
    ThriftCompiler,
    /// Apache Thrift's Python library, importable from `/usr/bin/python3`.
    PythonThrift,
    /// `haproxy`, for tests that put a real load balancer in front.
    Haproxy,
}

/// The only Python the tests use: Debian's `python3-thrift` is installed for
/// it, and the `python3` first on PATH may be another interpreter.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

impl Tool {
    /// The Debian package that provides the tool.
    pub fn debian_package(self) -> &'static str {
        match self {
            Tool::ThriftCompiler => "thrift-compiler",
            Tool::PythonThrift => "python3-thrift",
            Tool::Haproxy => "haproxy",
        }
    }

    /// Whether the tool works here.
    pub fn is_available(self) -> bool {
        let quiet = |cmd: &mut Command| {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        match self {
            Tool::ThriftCompiler => quiet(Command::new("thrift").arg("--version")),
            Tool::PythonThrift => {
                Path::new(SYSTEM_PYTHON).exists()
                    && quiet(Command::new(SYSTEM_PYTHON).args(["-c", "import thrift"]))
            }
            Tool::Haproxy => quiet(Command::new("haproxy").arg("-v")),
        }
    }
}

/// `true` when `tool` is available. Otherwise: under `CI=true` panics naming
/// the Debian package to install; locally prints `SKIPPED: ...` to stderr
/// and returns `false` (the caller returns early).
pub fn require_tool(test: &str, tool: Tool) -> bool {
    if tool.is_available() {
        return true;
    }
    let what = format!(
        "{test}: {tool:?} is missing; install it with `apt-get install -y {}`",
        tool.debian_package()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} (CI=true: interop tests may not be skipped)");
    }
    eprintln!("SKIPPED: {what}");
    false
}
