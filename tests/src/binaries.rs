//! Finding the workspace's binaries from inside a test executable.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for binaries of the package under
//! test, and `e2e` owns none. The binaries of the other packages land in the
//! same target directory: a test executable is `target/<profile>/deps/<test>-<hash>`,
//! so `uploader` and `probegate` are in `target/<profile>/`.

use std::path::PathBuf;

/// The path of the workspace binary `name` built in the same profile as this
/// test. Panics, saying how to build it, when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.file_name().is_some_and(|n| n == "deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("cannot derive target dir from {}", exe.display()));
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!(
            "binary `{name}` not found at {}: run `cargo test --workspace` (which builds it) \
             or `cargo build --workspace` first",
            path.display()
        );
    }
    path
}
