//! Running `cargo` from a program that `cargo run` started (`cargo stack`,
//! the bench), without rebuilding half the workspace each time.
//!
//! Cargo gives the program it runs variables that describe that program's
//! package (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...). A nested `cargo
//! build` passes them on to build scripts, and some build scripts watch
//! them: `ring`'s asks to be rerun when any of them changes. With them set,
//! `ring` and everything above it (rustls, OpenDAL, the uploader) were
//! rebuilt on every `cargo stack` and every bench run (38 s for a debug
//! build here), and the next plain `cargo build` or `cargo test` rebuilt
//! them again. [`command`] is `cargo` without those variables, so a nested
//! build sees the environment a build from the shell sees.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::process::Command;

/// The `cargo` that started this program (`$CARGO`), or the one on `PATH`,
/// without the variables Cargo set for this program's package.
pub fn command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        if set_for_the_running_package(&name) {
            command.env_remove(name);
        }
    }
    command
}

/// Whether Cargo sets `name` to describe the package it builds or runs
/// (its documented "environment variables Cargo sets for crates" and for
/// build scripts), as opposed to the user's own settings (`CARGO_HOME`,
/// `CARGO_TARGET_DIR`, `CARGO_PROFILE_*`, ...), which are kept.
fn set_for_the_running_package(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_CFG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_packages_variables_go_and_the_users_settings_stay() {
        for gone in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "OUT_DIR",
        ] {
            assert!(set_for_the_running_package(OsStr::new(gone)), "{gone}");
        }
        for kept in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "CARGO_BUILD_JOBS",
            "CARGO",
            "PATH",
        ] {
            assert!(!set_for_the_running_package(OsStr::new(kept)), "{kept}");
        }
    }

    #[test]
    fn a_test_run_by_cargo_has_its_package_variables_removed() {
        // `cargo test` sets them for this very process, as `cargo run`
        // does for the stack and the bench.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let command = command();
        let removed: Vec<&OsStr> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name)
            .collect();
        assert!(
            removed.contains(&OsStr::new("CARGO_MANIFEST_DIR")),
            "{removed:?}"
        );
        assert!(
            removed.contains(&OsStr::new("CARGO_PKG_NAME")),
            "{removed:?}"
        );
        assert!(
            !removed
                .iter()
                .any(|name| *name == "CARGO_HOME" || *name == "PATH"),
            "{removed:?}"
        );
    }
}
