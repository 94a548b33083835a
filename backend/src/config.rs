//! The uploader's configuration: the TOML file, parsed into typed values.
//!
//! Everything that can be wrong with a config is found here, before any port
//! is bound: unknown keys (`deny_unknown_fields` on every table, which is also
//! what keeps OSS credentials out of the file), values of the wrong shape
//! (durations and addresses are parsed at load), and values that parse but make
//! no sense (`validate`). Every error names the key and the offending value;
//! `main` exits with status 64 on any of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use confkit::{ConfigDuration, ConfigError};

use crate::flavor::{Flavor, Protocol, Transport};

/// Bytes a framed request may carry beyond the image itself: the message
/// header, the method name, field headers, the filename and the content type.
pub const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// The whole file. Every section and key may be omitted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[server]`: the Thrift listener and its fixed pool of worker threads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where Thrift clients (or probegate) connect.
    pub listen: ConfigAddr,
    /// Worker threads; each serves one connection for as long as it lives, so
    /// this is also the number of connections served at once.
    pub workers: usize,
    /// Longest wait for the next bytes from a client; on expiry the connection
    /// is closed and its worker freed. `"0s"` waits forever (the incident).
    pub read_timeout: ConfigDuration,
    /// Longest wait for a client to accept reply bytes. `"0s"` waits forever.
    pub write_timeout: ConfigDuration,
    pub protocol: Protocol,
    pub transport: Transport,
    /// Largest image accepted. Frames up to this plus `FRAME_OVERHEAD_BYTES`
    /// are read; longer ones are refused from their length header alone.
    pub max_upload_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ConfigAddr(SocketAddr::from(([127, 0, 0, 1], 9090))),
            workers: 10,
            read_timeout: ConfigDuration::secs(60),
            write_timeout: ConfigDuration::secs(60),
            protocol: Protocol::default(),
            transport: Transport::default(),
            max_upload_bytes: 10 * 1024 * 1024,
        }
    }
}

impl ServerConfig {
    pub fn flavor(&self) -> Flavor {
        Flavor::new(self.transport, self.protocol)
    }

    /// The socket read timeout: `None` when configured as zero.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout.non_zero()
    }

    /// The socket write timeout: `None` when configured as zero.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout.non_zero()
    }

    /// The largest frame (or string/binary field) a client may send.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_upload_bytes.saturating_add(FRAME_OVERHEAD_BYTES)
    }
}

/// `[admin]`: the HTTP listener for operators and for fetching stored objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `/metrics`, `/live`, `/ready` and, in fs mode, `/objects/<key>`.
    pub listen: ConfigAddr,
    /// Longest wait for a client to send a request's headers.
    pub timeout: ConfigDuration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: ConfigAddr(SocketAddr::from(([127, 0, 0, 1], 9091))),
            timeout: ConfigDuration::secs(10),
        }
    }
}

/// Which object store holds the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A local directory (`storage.root`), served back by the admin listener.
    #[default]
    Fs,
    /// Aliyun OSS; credentials come only from the environment.
    Oss,
}

/// OSS request addressing: bucket in the host name or in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressingStyle {
    /// `https://<bucket>.<endpoint>/<key>`, what Aliyun requires.
    #[default]
    Virtual,
    /// `https://<endpoint>/<bucket>/<key>`, for OSS-compatible servers.
    Path,
}

impl AddressingStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingStyle::Virtual => "virtual",
            AddressingStyle::Path => "path",
        }
    }
}

/// `[storage]`: where images go and how their URLs are formed. One flat table
/// rather than an enum per kind so that unknown keys are still reported by
/// name; keys that belong to the other kind are rejected by `validate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// fs: the directory objects are written under.
    pub root: Option<PathBuf>,
    /// oss: e.g. `"https://oss-cn-hangzhou.aliyuncs.com"`.
    pub endpoint: Option<String>,
    /// oss: the bucket name.
    pub bucket: Option<String>,
    /// oss: `"virtual"` (default) or `"path"`.
    pub addressing_style: Option<AddressingStyle>,
    /// Prefix of every returned URL; the key is appended. Derived when unset.
    pub public_base_url: Option<String>,
    /// First segment(s) of every object key.
    pub key_prefix: String,
    /// Bound on each storage operation attempt.
    pub timeout: ConfigDuration,
    /// Retries of a failed storage operation (with backoff) before giving up.
    pub retries: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Fs,
            root: None,
            endpoint: None,
            bucket: None,
            addressing_style: None,
            public_base_url: None,
            key_prefix: "images".to_string(),
            timeout: ConfigDuration::secs(30),
            retries: 3,
        }
    }
}

impl StorageConfig {
    /// The fs root, `./data` unless configured.
    pub fn fs_root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(|| PathBuf::from("./data"))
    }
}

/// A socket address, reported with its text when it does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ConfigAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(ConfigAddr).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid address {text:?}; write it as IP:PORT, like \"127.0.0.1:9090\""
            ))
        })
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        confkit::load(path)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        confkit::parse(text)
    }

    /// Checks the rules that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if server.workers == 0 {
            return Err(ConfigError::invalid(
                "server.workers",
                0,
                "must be at least 1 (the size of the worker pool)",
            ));
        }
        // A frame length is a signed 32-bit integer on the wire.
        let limit = i32::MAX as usize - FRAME_OVERHEAD_BYTES;
        if server.max_upload_bytes == 0 || server.max_upload_bytes > limit {
            return Err(ConfigError::invalid(
                "server.max_upload_bytes",
                server.max_upload_bytes,
                format!("must be between 1 and {limit}"),
            ));
        }
        if self.admin.timeout.get().is_zero() {
            return Err(ConfigError::invalid(
                "admin.timeout",
                self.admin.timeout,
                "must be more than zero",
            ));
        }
        self.validate_storage()
    }

    fn validate_storage(&self) -> Result<(), ConfigError> {
        let storage = &self.storage;
        if storage.timeout.get().is_zero() {
            return Err(ConfigError::invalid(
                "storage.timeout",
                storage.timeout,
                "must be more than zero",
            ));
        }
        validate_key_prefix(&storage.key_prefix)?;
        if let Some(url) = &storage.public_base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    "storage.public_base_url",
                    format!("{url:?}"),
                    "must start with http:// or https://",
                ));
            }
        }
        match storage.kind {
            StorageKind::Fs => {
                let oss_only = [
                    ("storage.endpoint", storage.endpoint.as_deref()),
                    ("storage.bucket", storage.bucket.as_deref()),
                    (
                        "storage.addressing_style",
                        storage.addressing_style.map(AddressingStyle::as_str),
                    ),
                ];
                for (key, value) in oss_only {
                    if let Some(value) = value {
                        return Err(ConfigError::invalid(
                            key,
                            format!("{value:?}"),
                            "applies only to storage.kind = \"oss\"",
                        ));
                    }
                }
                if storage.fs_root().as_os_str().is_empty() {
                    return Err(ConfigError::invalid(
                        "storage.root",
                        "\"\"",
                        "must name a directory",
                    ));
                }
            }
            StorageKind::Oss => {
                if let Some(root) = &storage.root {
                    return Err(ConfigError::invalid(
                        "storage.root",
                        format!("{:?}", root.display().to_string()),
                        "applies only to storage.kind = \"fs\" (use key_prefix in a bucket)",
                    ));
                }
                let endpoint = storage.endpoint.as_deref().unwrap_or_default();
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                    || endpoint_host(endpoint).is_empty()
                {
                    return Err(ConfigError::invalid(
                        "storage.endpoint",
                        format!("{endpoint:?}"),
                        "storage.kind = \"oss\" needs an endpoint URL like \"https://oss-cn-hangzhou.aliyuncs.com\"",
                    ));
                }
                let bucket = storage.bucket.as_deref().unwrap_or_default();
                let valid_bucket = (3..=63).contains(&bucket.len())
                    && bucket
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !bucket.starts_with('-')
                    && !bucket.ends_with('-');
                if !valid_bucket {
                    return Err(ConfigError::invalid(
                        "storage.bucket",
                        format!("{bucket:?}"),
                        "storage.kind = \"oss\" needs a bucket name: 3-63 characters of a-z, 0-9 and '-'",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The host (and port) of an endpoint URL: what follows the scheme, up to the
/// first `/`.
pub fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    rest.split('/').next().unwrap_or_default()
}

/// Keys become file paths and URL paths: only plain, visible segments.
fn validate_key_prefix(prefix: &str) -> Result<(), ConfigError> {
    let trimmed = prefix.trim_matches('/');
    let bad_char = trimmed
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')));
    let bad_segment = !trimmed.is_empty()
        && trimmed
            .split('/')
            .any(|segment| segment.is_empty() || segment.starts_with('.'));
    if bad_char.is_some() || bad_segment {
        return Err(ConfigError::invalid(
            "storage.key_prefix",
            format!("{prefix:?}"),
            "must be '/'-separated segments of A-Z, a-z, 0-9, '-', '_' and '.', none empty or starting with '.'",
        ));
    }
    Ok(())
}

impl confkit::Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        Config::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gets_the_documented_defaults() {
        let config = Config::parse("").expect("empty config is valid");
        assert_eq!(config.server.listen.0, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(config.server.workers, 10);
        assert_eq!(config.server.read_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(config.server.write_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(config.server.flavor(), Flavor::default());
        assert_eq!(config.server.max_upload_bytes, 10_485_760);
        assert_eq!(config.admin.listen.0, "127.0.0.1:9091".parse().unwrap());
        assert_eq!(config.storage.kind, StorageKind::Fs);
        assert_eq!(config.storage.fs_root(), PathBuf::from("./data"));
        assert_eq!(config.storage.key_prefix, "images");
        assert_eq!(config.storage.timeout.get(), Duration::from_secs(30));
        assert_eq!(config.storage.retries, 3);
    }

    #[test]
    fn zero_timeouts_mean_none() {
        let config = Config::parse("[server]\nread_timeout = \"0s\"\nwrite_timeout = \"0s\"\n")
            .expect("zero timeouts are allowed");
        assert_eq!(config.server.read_timeout(), None);
        assert_eq!(config.server.write_timeout(), None);
    }

    #[test]
    fn oss_config_parses() {
        let text = "[storage]\nkind = \"oss\"\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"img-bucket\"\naddressing_style = \"path\"\n";
        let config = Config::parse(text).expect("valid oss config");
        assert_eq!(config.storage.kind, StorageKind::Oss);
        assert_eq!(config.storage.addressing_style, Some(AddressingStyle::Path));
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let oss =
            "[storage]\nkind = \"oss\"\nendpoint = \"https://oss.example\"\nbucket = \"b-1\"\n";
        let cases: Vec<(String, &[&str])> = vec![
            ("[server]\nlisten_addr = \"127.0.0.1:1\"\n".into(), &["server.listen_addr", "127.0.0.1:1"]),
            ("[serverr]\nworkers = 1\n".into(), &["serverr"]),
            ("[server]\nread_timeout = \"5 parsecs\"\n".into(), &["server.read_timeout", "5 parsecs"]),
            ("[server]\nwrite_timeout = \"soon\"\n".into(), &["write_timeout", "soon"]),
            ("[server]\nlisten = \"nowhere:xx\"\n".into(), &["listen", "nowhere:xx"]),
            ("[admin]\nlisten = \"127.0.0.1\"\n".into(), &["admin.listen", "127.0.0.1"]),
            ("[server]\nworkers = 0\n".into(), &["server.workers", "0"]),
            ("[server]\nmax_upload_bytes = 0\n".into(), &["server.max_upload_bytes", "0"]),
            ("[server]\nprotocol = \"json\"\n".into(), &["protocol", "json"]),
            ("[server]\ntransport = \"zlib\"\n".into(), &["transport", "zlib"]),
            ("[storage]\nkind = \"s3\"\n".into(), &["kind", "s3"]),
            ("[storage]\ntimeout = \"0s\"\n".into(), &["storage.timeout", "0s"]),
            ("[storage]\nkey_prefix = \"../up\"\n".into(), &["storage.key_prefix", "../up"]),
            ("[storage]\npublic_base_url = \"ftp://x/\"\n".into(), &["storage.public_base_url", "ftp://x/"]),
            ("[storage]\nbucket = \"b-1\"\n".into(), &["storage.bucket", "b-1"]),
            (format!("{oss}access_key_id = \"LTAI123\"\n"), &["storage.access_key_id"]),
            (format!("{oss}access_key_secret = \"s3cr3t\"\n"), &["access_key_secret"]),
            (format!("{oss}root = \"/srv\"\n"), &["storage.root", "/srv"]),
            ("[storage]\nkind = \"oss\"\nbucket = \"b-1\"\n".into(), &["storage.endpoint"]),
            (
                "[storage]\nkind = \"oss\"\nendpoint = \"https://oss.example\"\nbucket = \"Bad_Bucket\"\n".into(),
                &["storage.bucket", "Bad_Bucket"],
            ),
            (format!("{oss}addressing_style = \"cname\"\n"), &["addressing_style", "cname"]),
        ];
        for (text, needles) in &cases {
            let message = Config::parse(text).expect_err(text).to_string();
            for needle in *needles {
                assert!(
                    message.contains(needle),
                    "{message:?} should mention {needle:?}"
                );
            }
        }
    }

    #[test]
    fn a_secret_in_the_file_is_refused_without_echoing_it() {
        let text = "[storage]\nkind = \"oss\"\naccess_key_secret = \"s3cr3t-value\"\n";
        let message = Config::parse(text).expect_err("secret in file").to_string();
        assert!(message.contains("storage.access_key_secret"), "{message}");
        assert!(!message.contains("s3cr3t-value"), "{message}");
    }

    #[test]
    fn endpoint_host_strips_scheme_and_path() {
        assert_eq!(
            endpoint_host("https://oss-cn-hangzhou.aliyuncs.com"),
            "oss-cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(endpoint_host("http://127.0.0.1:9000/x"), "127.0.0.1:9000");
        assert_eq!(endpoint_host("https://"), "");
    }
}
