//! The parts of config handling that `uploader` and `probegate` share.
//!
//! Both programs promise the same thing about their config files (DESIGN.md):
//! unknown keys are an error, bad values are reported with the key path and
//! the value, and the process exits 64 before binding any port. This crate
//! holds what makes those promises identical in both: the error type, the
//! duration type, and reading + parsing + validating a file. Each program's
//! own `config.rs` keeps its keys and its rules.
//!
//! # Layout
//! - `describe`: a TOML parse error as one line naming key path and value.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

pub mod describe;

/// Why a configuration could not be used. The message always names the key
/// and the value so the operator can fix the file without guessing.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}` = {value}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// A value that parsed but breaks a rule.
    pub fn invalid(
        key: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// A config that can check the rules its types cannot express.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Parses and validates TOML text.
pub fn parse<T: DeserializeOwned + Validate>(text: &str) -> Result<T, ConfigError> {
    let config: T = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: "<text>".to_string(),
        message: describe::describe(text, &e),
    })?;
    config.validate()?;
    Ok(config)
}

/// Reads, parses and validates the file at `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ConfigError::Parse { message, .. } => ConfigError::Parse {
            path: path.display().to_string(),
            message,
        },
        other => other,
    })
}

/// A duration written as in `"2s"`, `"500ms"`, `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub const fn secs(secs: u64) -> Self {
        ConfigDuration(Duration::from_secs(secs))
    }

    pub fn get(self) -> Duration {
        self.0
    }

    /// The duration, or `None` for `"0s"` where zero means "no limit" (as
    /// for socket timeouts).
    pub fn non_zero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(ConfigDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} ({e}); write it like \"500ms\", \"2s\" or \"1m\""
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        wait: ConfigDuration,
    }

    impl Validate for Doc {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.wait.get().is_zero() {
                return Err(ConfigError::invalid("wait", self.wait, "must be positive"));
            }
            Ok(())
        }
    }

    #[test]
    fn durations_parse_and_errors_name_key_and_value() {
        let doc: Doc = parse("wait = \"1m 30s\"\n").expect("parses");
        assert_eq!(doc.wait.get(), Duration::from_secs(90));
        let bad = parse::<Doc>("wait = \"5 parsecs\"\n")
            .expect_err("bad")
            .to_string();
        assert!(bad.contains("`wait`") && bad.contains("5 parsecs"), "{bad}");
        let zero = parse::<Doc>("wait = \"0s\"\n")
            .expect_err("zero")
            .to_string();
        assert_eq!(zero, "config key `wait` = \"0s\": must be positive");
        let missing = load::<Doc>(Path::new("/nonexistent/x.toml")).expect_err("missing");
        assert!(
            missing.to_string().contains("/nonexistent/x.toml"),
            "{missing}"
        );
    }
}
