//! The client subcommands of the `uploader` binary: `upload` and `ping`.
//!
//! They live in the library, writing to the streams they are given, so that
//! their output and exit codes can be tested without spawning a process.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Client, ClientError, Flavor};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: String,
    pub flavor: Flavor,
    /// Connect, read and write timeout of every call; zero means none.
    pub timeout: Duration,
}

impl Target {
    fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(self.server.as_str(), self.flavor, self.timeout)
    }
}

/// Uploads each file in order and prints one URL per stored file on `out`.
/// A failed file is reported on `err` (naming the file and the error code)
/// and the others still go. Returns the process exit code: 0 if every file
/// was stored, 1 otherwise.
pub fn upload(
    target: &Target,
    files: &[PathBuf],
    content_type: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut client: Option<Client> = None;
    let mut failed = 0usize;
    for file in files {
        let name = file.display();
        let data = match std::fs::read(file) {
            Ok(data) => data,
            Err(e) => {
                let _ = writeln!(err, "uploader: {name}: cannot read: {e}");
                failed += 1;
                continue;
            }
        };
        if client.is_none() {
            match target.connect() {
                Ok(c) => client = Some(c),
                Err(e) => {
                    let _ = writeln!(err, "uploader: {name}: {e}");
                    failed += 1;
                    continue;
                }
            }
        }
        let Some(connected) = client.as_mut() else {
            continue;
        };
        let filename = file.file_name().map(|n| n.to_string_lossy().into_owned());
        match connected.upload(data, filename.as_deref(), content_type) {
            Ok(result) => {
                let _ = writeln!(out, "{}", result.url);
                let _ = out.flush();
            }
            Err(e) => {
                let _ = writeln!(err, "uploader: {name}: upload failed: {e}");
                failed += 1;
                // After a refusal the connection is fine; after anything
                // else it may be out of step, so the next file reconnects.
                if !matches!(e, ClientError::Upload(_)) {
                    client = None;
                }
            }
        }
    }
    i32::from(failed > 0)
}

/// Pings the server and prints its answer. Returns the exit code.
pub fn ping(target: &Target, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match target.connect().and_then(|mut c| c.ping()) {
        Ok(answer) => {
            let _ = writeln!(out, "{answer}");
            0
        }
        Err(e) => {
            let _ = writeln!(err, "uploader: ping {}: {e}", target.server);
            1
        }
    }
}
