//! Config files for the servers under test, built in code.
//!
//! [`TomlConfig`] is a TOML table edited by dotted key paths, so a test states
//! only the keys it cares about (`.set("server.workers", 2)`). The typed
//! builders on top ([`UploaderConfig`], [`ProbegateConfig`]) start from what
//! every test needs — listeners on `127.0.0.1:0` — and name the common keys.
//! The key names are the servers' contract (`config/*.toml`); a typo here is a
//! config error in the server, which the tests then report.

use std::net::SocketAddr;
use std::path::Path;

use toml::{Table, Value};

/// A TOML document built by key paths.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TomlConfig {
    root: Table,
}

impl TomlConfig {
    pub fn new() -> TomlConfig {
        TomlConfig::default()
    }

    /// Parses TOML text; panics on a syntax error (tests that need a broken
    /// file write the text themselves).
    pub fn parse(text: &str) -> TomlConfig {
        let root = text
            .parse::<Table>()
            .unwrap_or_else(|e| panic!("test config is not valid TOML: {e}\n{text}"));
        TomlConfig { root }
    }

    /// Sets `a.b.c = value`, creating the tables on the way.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> TomlConfig {
        self.insert(path, value.into());
        self
    }

    /// Sets a value in place.
    pub fn insert(&mut self, path: &str, value: Value) {
        let (table, key) = self.parent_mut(path);
        table.insert(key.to_string(), value);
    }

    /// Removes `a.b.c` if present.
    pub fn remove(mut self, path: &str) -> TomlConfig {
        let (table, key) = self.parent_mut(path);
        table.remove(key);
        self
    }

    /// Appends a table to the array of tables at `path` (`[[backends]]`).
    pub fn push(mut self, path: &str, item: TomlConfig) -> TomlConfig {
        let (table, key) = self.parent_mut(path);
        let entry = table
            .entry(key.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        match entry {
            Value::Array(items) => items.push(Value::Table(item.root)),
            other => panic!("config key {path} is {other:?}, not an array of tables"),
        }
        self
    }

    /// The value at `a.b.c`, if set.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.root.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    /// The value at `a.b.c` as a string, if it is one.
    pub fn get_str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// Sets `path` only when it is not set yet.
    pub fn set_default(&mut self, path: &str, value: impl Into<Value>) {
        if self.get(path).is_none() {
            self.insert(path, value.into());
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(&self.root).expect("a toml::Table always serializes")
    }

    fn parent_mut<'p>(&mut self, path: &'p str) -> (&mut Table, &'p str) {
        let mut parts: Vec<&str> = path.split('.').collect();
        let key = parts
            .pop()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| panic!("empty key in {path:?}"));
        let mut table = &mut self.root;
        for part in parts {
            let next = table
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            table = match next {
                Value::Table(t) => t,
                other => panic!("config key {part} in {path} is {other:?}, not a table"),
            };
        }
        (table, key)
    }
}

impl From<&str> for TomlConfig {
    fn from(text: &str) -> TomlConfig {
        TomlConfig::parse(text)
    }
}

/// Thrift transport names as the config files spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Framed,
    Buffered,
}

/// Thrift protocol names as the config files spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Framed => "framed",
            Transport::Buffered => "buffered",
        }
    }
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Binary => "binary",
            Protocol::Compact => "compact",
        }
    }
}

/// Config of the `uploader` backend (`config/uploader.toml` documents the
/// keys), plus the environment it runs with.
///
/// By default: Thrift and admin on `127.0.0.1:0`, fs storage in a `data`
/// directory inside the server's scratch dir (filled in at start).
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    pub toml: TomlConfig,
    /// Environment for the child, e.g. the OSS credentials.
    pub env: Vec<(String, String)>,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        UploaderConfig::new()
    }
}

impl UploaderConfig {
    pub fn new() -> UploaderConfig {
        UploaderConfig {
            toml: TomlConfig::new()
                .set("server.listen", "127.0.0.1:0")
                .set("admin.listen", "127.0.0.1:0"),
            env: Vec::new(),
        }
    }

    /// Any key, e.g. `.set("server.write_timeout", "5s")`.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> UploaderConfig {
        self.toml = self.toml.set(path, value);
        self
    }

    /// `server.workers`: the fixed pool size.
    pub fn workers(self, n: i64) -> UploaderConfig {
        self.set("server.workers", n)
    }

    /// `server.read_timeout`, e.g. `"0s"` (none: the incident) or `"1s"`.
    pub fn read_timeout(self, d: &str) -> UploaderConfig {
        self.set("server.read_timeout", d)
    }

    pub fn write_timeout(self, d: &str) -> UploaderConfig {
        self.set("server.write_timeout", d)
    }

    pub fn protocol(self, p: Protocol) -> UploaderConfig {
        self.set("server.protocol", p.as_str())
    }

    pub fn transport(self, t: Transport) -> UploaderConfig {
        self.set("server.transport", t.as_str())
    }

    pub fn max_upload_bytes(self, n: i64) -> UploaderConfig {
        self.set("server.max_upload_bytes", n)
    }

    /// `server.listen`, for a restart on the same port.
    pub fn listen(self, addr: SocketAddr) -> UploaderConfig {
        self.set("server.listen", addr.to_string())
    }

    pub fn admin_listen(self, addr: SocketAddr) -> UploaderConfig {
        self.set("admin.listen", addr.to_string())
    }

    /// fs storage at an explicit root (the default is a fresh temp dir).
    pub fn storage_fs(self, root: &Path) -> UploaderConfig {
        self.set("storage.kind", "fs")
            .set("storage.root", root.display().to_string())
    }

    /// OSS storage against `endpoint` (e.g. [`crate::FakeOss::endpoint`]),
    /// with the credentials passed the only way the backend accepts them: the
    /// environment.
    pub fn storage_oss(
        mut self,
        endpoint: &str,
        bucket: &str,
        addressing_style: &str,
        access_key_id: &str,
        access_key_secret: &str,
    ) -> UploaderConfig {
        self.toml = self
            .toml
            .remove("storage.root")
            .set("storage.kind", "oss")
            .set("storage.endpoint", endpoint)
            .set("storage.bucket", bucket)
            .set("storage.addressing_style", addressing_style);
        self.env.retain(|(k, _)| !k.starts_with("OSS_ACCESS_KEY_"));
        self.env
            .push(("OSS_ACCESS_KEY_ID".to_string(), access_key_id.to_string()));
        self.env.push((
            "OSS_ACCESS_KEY_SECRET".to_string(),
            access_key_secret.to_string(),
        ));
        self
    }

    /// The storage kind this config selects (`fs` when unset).
    pub fn storage_kind(&self) -> &str {
        self.toml.get_str("storage.kind").unwrap_or("fs")
    }

    /// The configured Thrift flavour (backend defaults: framed, binary).
    pub fn flavor(&self) -> (Transport, Protocol) {
        let transport = match self.toml.get_str("server.transport") {
            Some("buffered") => Transport::Buffered,
            _ => Transport::Framed,
        };
        let protocol = match self.toml.get_str("server.protocol") {
            Some("compact") => Protocol::Compact,
            _ => Protocol::Binary,
        };
        (transport, protocol)
    }
}

impl From<&str> for UploaderConfig {
    fn from(text: &str) -> UploaderConfig {
        let mut toml = TomlConfig::parse(text);
        toml.set_default("server.listen", "127.0.0.1:0");
        toml.set_default("admin.listen", "127.0.0.1:0");
        UploaderConfig {
            toml,
            env: Vec::new(),
        }
    }
}

/// Config of `probegate` (`config/probegate.toml` documents the keys).
///
/// By default: public and admin listeners on `127.0.0.1:0`, no backends —
/// add them with [`ProbegateConfig::backend`].
#[derive(Debug, Clone)]
pub struct ProbegateConfig {
    pub toml: TomlConfig,
    pub env: Vec<(String, String)>,
}

impl Default for ProbegateConfig {
    fn default() -> Self {
        ProbegateConfig::new()
    }
}

impl ProbegateConfig {
    pub fn new() -> ProbegateConfig {
        ProbegateConfig {
            toml: TomlConfig::new()
                .set("listen.public", "127.0.0.1:0")
                .set("listen.admin", "127.0.0.1:0"),
            env: Vec::new(),
        }
    }

    pub fn set(mut self, path: &str, value: impl Into<Value>) -> ProbegateConfig {
        self.toml = self.toml.set(path, value);
        self
    }

    /// Adds a `[[backends]]` entry with `max_connections` slots (the
    /// backend's worker count).
    pub fn backend(mut self, address: SocketAddr, max_connections: i64) -> ProbegateConfig {
        let item = TomlConfig::new()
            .set("address", address.to_string())
            .set("max_connections", max_connections);
        self.toml = self.toml.push("backends", item);
        self
    }

    /// Adds a `[[backends]]` entry given as a whole table (for the optional
    /// keys: `transport`, `protocol`, `read_timeout`).
    pub fn backend_table(mut self, item: TomlConfig) -> ProbegateConfig {
        self.toml = self.toml.push("backends", item);
        self
    }
}

impl From<&str> for ProbegateConfig {
    fn from(text: &str) -> ProbegateConfig {
        let mut toml = TomlConfig::parse(text);
        toml.set_default("listen.public", "127.0.0.1:0");
        toml.set_default("listen.admin", "127.0.0.1:0");
        ProbegateConfig {
            toml,
            env: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_nested_keys_and_tables() {
        let cfg = UploaderConfig::new()
            .workers(2)
            .read_timeout("0s")
            .protocol(Protocol::Compact);
        let text = cfg.toml.to_toml();
        let back: Table = text.parse().unwrap();
        assert_eq!(back["server"]["workers"].as_integer(), Some(2));
        assert_eq!(back["server"]["read_timeout"].as_str(), Some("0s"));
        assert_eq!(back["admin"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(cfg.flavor(), (Transport::Framed, Protocol::Compact));

        let p = ProbegateConfig::new()
            .backend("127.0.0.1:1".parse().unwrap(), 2)
            .backend("127.0.0.1:2".parse().unwrap(), 3);
        let back: Table = p.toml.to_toml().parse().unwrap();
        let backends = back["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[1]["max_connections"].as_integer(), Some(3));
    }

    #[test]
    fn oss_replaces_fs_and_sets_env() {
        let cfg = UploaderConfig::new()
            .storage_fs(Path::new("/x"))
            .storage_oss("http://127.0.0.1:1", "b", "path", "ak", "sk");
        assert_eq!(cfg.storage_kind(), "oss");
        assert!(cfg.toml.get("storage.root").is_none());
        assert!(cfg
            .env
            .contains(&("OSS_ACCESS_KEY_SECRET".to_string(), "sk".to_string())));
    }

    #[test]
    fn text_keeps_explicit_listen() {
        let cfg = UploaderConfig::from("[server]\nlisten = \"127.0.0.1:7\"\n");
        assert_eq!(cfg.toml.get_str("server.listen"), Some("127.0.0.1:7"));
        assert_eq!(cfg.toml.get_str("admin.listen"), Some("127.0.0.1:0"));
    }
}
