//! Finding the workspace's binaries from inside a test executable, and
//! refusing one built from older sources.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for binaries of the package under
//! test, and `e2e` owns none. The binaries of the other packages land in the
//! same target directory: a test executable is `target/<profile>/deps/<test>-<hash>`,
//! so `uploader` and `probegate` are in `target/<profile>/`.
//!
//! Nothing makes Cargo rebuild them for `cargo test -p e2e`: after an edit
//! to the proxy, that command would test the proxy as it was before the
//! edit, and pass or fail for the wrong reason. Cargo writes beside each
//! binary a dep-info file (`<name>.d`) listing the workspace sources it was
//! built from; a binary older than one of them, or built from one that is
//! gone, is refused with the command that rebuilds it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The path of the workspace binary `name` built in the same profile as this
/// test. Panics, saying how to build it, when it is missing or older than
/// its sources.
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
    if let Some(stale) = stale_source(&path, &profile_dir.join(format!("{name}.d"))) {
        panic!(
            "binary `{name}` at {} is older than its source {}: this test would run the \
             code as it was before that change. Run `cargo test --workspace` (which \
             rebuilds it) or `cargo build --workspace` first",
            path.display(),
            stale.describe()
        );
    }
    path
}

/// A source the binary was not built from as it is now.
#[derive(Debug, PartialEq, Eq)]
enum Stale {
    ChangedAfter(PathBuf),
    Gone(PathBuf),
}

impl Stale {
    fn describe(&self) -> String {
        match self {
            Stale::ChangedAfter(p) => format!("{} (changed after the build)", p.display()),
            Stale::Gone(p) => format!("{} (removed since the build)", p.display()),
        }
    }
}

/// The first source listed in `dep_info` that changed after `binary` was
/// written, or no longer exists. `None` when all are older, or when there
/// is no dep-info to tell (a binary not built by Cargo).
fn stale_source(binary: &Path, dep_info: &Path) -> Option<Stale> {
    let listed = std::fs::read_to_string(dep_info).ok()?;
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    dep_info_sources(&listed)
        .into_iter()
        .find_map(|source| match modified(&source) {
            None => Some(Stale::Gone(source)),
            Some(at) if at > built => Some(Stale::ChangedAfter(source)),
            Some(_) => None,
        })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The prerequisites of the first rule in a Makefile-style dep-info file
/// (`target: source source ...`, a space inside a path escaped as `\ `).
fn dep_info_sources(listed: &str) -> Vec<PathBuf> {
    let rule = listed.lines().next().unwrap_or("");
    let prerequisites = rule.split_once(": ").map_or("", |(_, rest)| rest);
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = prerequisites.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    paths.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        paths.push(PathBuf::from(current));
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TempDir;
    use std::fs::File;
    use std::time::Duration;

    #[test]
    fn dep_info_lists_the_first_rules_sources_with_escaped_spaces() {
        let listed =
            "/t/debug/probegate: /w/proxy/src/main.rs /w/my\\ dir/lib.rs\n\n/other: /x.rs\n";
        assert_eq!(
            dep_info_sources(listed),
            [
                PathBuf::from("/w/proxy/src/main.rs"),
                PathBuf::from("/w/my dir/lib.rs")
            ]
        );
        assert!(dep_info_sources("").is_empty());
    }

    /// A binary and two sources in a scratch directory, the sources written
    /// `offsets` seconds after the binary (negative: before).
    fn build(dir: &Path, offsets: [i64; 2]) -> (PathBuf, PathBuf, [PathBuf; 2]) {
        let binary = dir.join("probegate");
        File::create(&binary).expect("binary");
        let built = modified(&binary).expect("binary's time");
        let sources = [dir.join("a.rs"), dir.join("b.rs")];
        for (source, offset) in sources.iter().zip(offsets) {
            let at = if offset >= 0 {
                built + Duration::from_secs(offset.unsigned_abs())
            } else {
                built - Duration::from_secs(offset.unsigned_abs())
            };
            File::create(source)
                .and_then(|f| f.set_modified(at))
                .expect("source");
        }
        let dep_info = dir.join("probegate.d");
        let rule = format!(
            "{}: {} {}\n",
            binary.display(),
            sources[0].display(),
            sources[1].display()
        );
        std::fs::write(&dep_info, rule).expect("dep-info");
        (binary, dep_info, sources)
    }

    #[test]
    fn a_binary_built_after_its_sources_is_current() {
        let dir = TempDir::new("binaries-current");
        let (binary, dep_info, _) = build(dir.path(), [-10, -5]);
        assert_eq!(stale_source(&binary, &dep_info), None);
    }

    #[test]
    fn a_source_changed_after_the_build_makes_the_binary_stale() {
        let dir = TempDir::new("binaries-changed");
        let (binary, dep_info, sources) = build(dir.path(), [-10, 5]);
        assert_eq!(
            stale_source(&binary, &dep_info),
            Some(Stale::ChangedAfter(sources[1].clone()))
        );
    }

    #[test]
    fn a_source_removed_since_the_build_makes_the_binary_stale() {
        let dir = TempDir::new("binaries-gone");
        let (binary, dep_info, sources) = build(dir.path(), [-10, -5]);
        std::fs::remove_file(&sources[0]).expect("remove");
        assert_eq!(
            stale_source(&binary, &dep_info),
            Some(Stale::Gone(sources[0].clone()))
        );
    }

    #[test]
    fn without_dep_info_nothing_can_be_told() {
        let dir = TempDir::new("binaries-no-dep-info");
        let (binary, _, _) = build(dir.path(), [5, 5]);
        assert_eq!(stale_source(&binary, &dir.path().join("absent.d")), None);
    }
}
