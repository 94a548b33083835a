//! Apache Thrift's Python client (`tests/python/upload_client.py`), run as a
//! subprocess: interop with an implementation nobody on this project wrote.
//!
//! The Python code for the service is generated at test time from
//! `idl/uploader.thrift` with the Debian `thrift` compiler, and the script
//! runs only under `/usr/bin/python3`, the interpreter Debian's
//! `python3-thrift` is installed for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::{Protocol, Transport};
use crate::tempdir::TempDir;
use crate::tools::{require_tool, Tool, SYSTEM_PYTHON};

/// Bound on one run of the Python client.
pub const PYTHON_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python client with its generated code, ready to run.
pub struct PythonClient {
    gen: TempDir,
}

/// What the script printed, parsed.
pub type Reply = serde_json::Value;

impl PythonClient {
    /// Generates the Python code; `None` (after `require_tool`'s SKIPPED
    /// line) when the tools are missing outside CI.
    pub fn setup(test: &str) -> Option<PythonClient> {
        if !require_tool(test, Tool::ThriftCompiler) || !require_tool(test, Tool::PythonThrift) {
            return None;
        }
        let gen = TempDir::new("python-gen");
        let idl = idl_path();
        let output = Command::new("thrift")
            .args(["--gen", "py", "-out"])
            .arg(gen.path())
            .arg(&idl)
            .output()
            .unwrap_or_else(|e| panic!("running thrift --gen py: {e}"));
        assert!(
            output.status.success(),
            "thrift --gen py {} failed: {}",
            idl.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Some(PythonClient { gen })
    }

    /// `upload(file)`; the JSON reply (`url`..., or `error.code`).
    pub fn upload(
        &self,
        addr: SocketAddr,
        transport: Transport,
        protocol: Protocol,
        file: &Path,
        content_type: Option<&str>,
    ) -> Reply {
        let mut args = vec!["--file".to_string(), file.display().to_string()];
        if let Some(ct) = content_type {
            args.push("--content-type".to_string());
            args.push(ct.to_string());
        }
        self.run(addr, transport, protocol, &args)
    }

    /// `ping()`; the JSON reply (`{"pong": "pong"}`).
    pub fn ping(&self, addr: SocketAddr, transport: Transport, protocol: Protocol) -> Reply {
        self.run(addr, transport, protocol, &["--ping".to_string()])
    }

    fn run(
        &self,
        addr: SocketAddr,
        transport: Transport,
        protocol: Protocol,
        extra: &[String],
    ) -> Reply {
        let mut child = Command::new(SYSTEM_PYTHON)
            .arg(script_path())
            .arg("--gen-dir")
            .arg(self.gen.path())
            .args(["--host", &addr.ip().to_string()])
            .args(["--port", &addr.port().to_string()])
            .args(["--transport", transport.as_str()])
            .args(["--protocol", protocol.as_str()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {SYSTEM_PYTHON}: {e}"));
        let started = std::time::Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > PYTHON_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("python client still running after {PYTHON_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("python output");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "python client ({}) printed no JSON ({e}):\nstdout: {stdout}\nstderr: {stderr}",
                output.status
            )
        })
    }
}

/// `idl/uploader.thrift` of this workspace.
pub fn idl_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl/uploader.thrift")
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/upload_client.py")
}
