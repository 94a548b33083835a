//! probegate's configuration: the TOML file, parsed into typed values.
//!
//! Everything that can be wrong with a config is found here, before any port
//! is bound: unknown keys (serde `deny_unknown_fields`), values of the wrong
//! shape (durations, addresses, CIDRs parsed at load), and values that parse
//! but make no sense together (`validate`). Every error names the key path and
//! the offending value, and `main` exits with status 64 on any of them.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

pub use confkit::{ConfigDuration, ConfigError};

use crate::protocols::thrift::{Flavor, Protocol, Transport};

/// The largest `forwarding.pipeline_depth`: beyond this a pipelined call
/// would wait behind more calls than any quick method justifies.
pub const MAX_PIPELINE_DEPTH: usize = 1024;

/// The longest `forwarding.pipeline_linger`: an idle pipelined connection
/// holds a backend slot, so it is kept for moments, not for pooling.
pub const MAX_PIPELINE_LINGER: Duration = Duration::from_secs(1);

/// The largest `forwarding.kept_pipe_bytes`: the pool keeps at most
/// [`KEEP_PIPES`](crate::upstream::pipes::KEEP_PIPES) pipes, none larger
/// than a segment, so more could never be used.
pub const MAX_KEPT_PIPE_BYTES: usize =
    crate::upstream::pipes::KEEP_PIPES * crate::upstream::pipes::SEGMENT_BYTES;

/// The whole file. Sections may be omitted; each has defaults except
/// `[[backends]]`, of which there must be at least one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub probes: ProbesConfig,
    #[serde(default)]
    pub clients: ClientsConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub forwarding: ForwardingConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
}

/// `[listen]`: where probegate accepts connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// The port the load balancer points at: probes, HTTP health pings and
    /// Thrift clients all arrive here.
    pub public: SocketAddr,
    /// The operators' port: `/metrics`, `/live`, `/ready`, `/status`.
    /// Loopback by default so that metrics are never public by accident.
    pub admin: SocketAddr,
    /// Expect a PROXY protocol (v1 or v2) header on every public connection,
    /// as sent by a load balancer configured to preserve client addresses.
    pub proxy_protocol: bool,
    /// The public socket's listen backlog: connections the kernel has
    /// completed but probegate has not accepted yet. Bursts of health probes
    /// and reconnecting clients must not overflow it (the kernel caps it at
    /// `net.core.somaxconn`).
    pub backlog: u32,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            public: SocketAddr::from(([0, 0, 0, 0], 9455)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9456)),
            proxy_protocol: false,
            backlog: 1024,
        }
    }
}

/// `[[backends]]`: one thread-per-connection Thrift server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `host:port` of the backend's Thrift listener.
    pub address: SocketAddr,
    /// How many connections the backend can serve at once: its worker
    /// threads. probegate never opens more than this.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The backend's own read timeout, if it has one. When given, validation
    /// keeps `forwarding.pool_idle` plus `forwarding.pipeline_linger` below
    /// it so the backend never closes a pooled connection under probegate's
    /// feet.
    #[serde(default)]
    pub read_timeout: Option<ConfigDuration>,
    /// The Thrift transport the backend is configured with.
    #[serde(default = "default_backend_transport")]
    pub transport: Transport,
    /// The Thrift protocol the backend is configured with.
    #[serde(default = "default_backend_protocol")]
    pub protocol: Protocol,
}

impl BackendConfig {
    /// The dialect probegate must speak on connections to this backend.
    pub fn flavor(&self) -> Flavor {
        Flavor {
            transport: self.transport,
            protocol: self.protocol,
        }
    }
}

fn default_backend_transport() -> Transport {
    Transport::Framed
}

fn default_backend_protocol() -> Protocol {
    Protocol::Binary
}

fn default_max_connections() -> usize {
    10
}

/// `[probes]`: where the load balancer's health checkers come from.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesConfig {
    /// CIDRs or presets (`aliyun`, `gcp`, `aws` has no fixed range). A
    /// connection from these is a health check and is never forwarded.
    pub sources: Vec<ProbeSource>,
}

/// `[clients]`: who may use the Thrift path at all.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// When non-empty, only these CIDRs (plus probe sources) are served.
    pub allow: Vec<IpNet>,
    /// Closed at once, before anything is read.
    pub deny: Vec<IpNet>,
}

/// `[health]`: the health answer given to the load balancer, and the active
/// checks of the backends that decide it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// HTTP paths answered with 200/503 on the public port.
    pub paths: Vec<String>,
    /// How often each backend is pinged.
    pub interval: ConfigDuration,
    /// The reply deadline of one active check (after the connect).
    pub timeout: ConfigDuration,
    /// Consecutive successful checks that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Stop accepting on the public port while no backend is up, so that a
    /// plain TCP health check fails too.
    pub tcp_follows_backend: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            paths: vec!["/health".to_string()],
            interval: ConfigDuration::secs(2),
            timeout: ConfigDuration::secs(1),
            rise: 2,
            fall: 3,
            tcp_follows_backend: false,
        }
    }
}

/// `[timeouts]`: every wait probegate makes has a bound here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// How long a new connection may stay silent before it is treated as a
    /// probe and closed.
    pub first_byte: ConfigDuration,
    /// Connecting to a backend.
    pub connect: ConfigDuration,
    /// A client connection with no traffic in either direction for this long
    /// is closed.
    pub idle: ConfigDuration,
    /// The longest a request (or connection, in connection mode) waits in the
    /// queue for a free backend slot.
    pub queue: ConfigDuration,
    /// The longest a dispatched request may take for its reply.
    pub request: ConfigDuration,
    /// Reading a PROXY protocol header.
    pub proxy_header: ConfigDuration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            first_byte: ConfigDuration::secs(5),
            connect: ConfigDuration::secs(1),
            idle: ConfigDuration::secs(60),
            queue: ConfigDuration::secs(5),
            request: ConfigDuration::secs(30),
            proxy_header: ConfigDuration::secs(2),
        }
    }
}

/// `[limits]`: bounds on memory and connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest Thrift frame or message accepted (the Apache default).
    pub max_frame_bytes: usize,
    /// Longest queue of waiting requests before new ones are shed.
    pub max_queue: usize,
    /// Client connections open at once on the public port.
    pub max_client_connections: usize,
    /// Client connections open at once from one source address.
    pub max_connections_per_source: usize,
    /// Request bytes buffered across all clients before reading pauses.
    pub max_buffered_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 16_384_000,
            max_queue: 1024,
            max_client_connections: 20_000,
            max_connections_per_source: 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How client connections map onto backend connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardingMode {
    /// Each complete request is dispatched to a pooled backend connection;
    /// idle clients hold no backend thread.
    Request,
    /// Each client connection gets its own backend connection for its
    /// lifetime (bounded by `timeouts.idle`).
    Connection,
}

/// `[forwarding]`: request-level dispatch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingConfig {
    pub mode: ForwardingMode,
    /// A pooled backend connection unused this long is closed.
    pub pool_idle: ConfigDuration,
    /// Methods safe to retry once on a fresh connection when a call dies in
    /// flight (they must be idempotent).
    pub retry_methods: Vec<String>,
    /// Quick methods whose calls may be pipelined: sent on a backend
    /// connection that already carries calls of these methods, behind them,
    /// instead of taking a connection (and a backend thread) each. A call of
    /// any other method always has a connection to itself, so nothing ever
    /// waits behind it.
    pub pipeline_methods: Vec<String>,
    /// The most calls in flight on one pipelined connection (1: no
    /// pipelining).
    pub pipeline_depth: usize,
    /// How long a pipelined connection whose calls are all answered waits
    /// for the next one before it gives its slot and connection back
    /// (at once when a call waits for a slot). Under steady load the next
    /// call comes within microseconds, and reopening a lane per burst cost
    /// more than the calls it carried (bench/README.md).
    pub pipeline_linger: ConfigDuration,
    /// Whether the bodies of large framed calls go from the client's socket
    /// to the backend's through kernel pipes, never copied by probegate
    /// (README "Large calls go through pipes"). `false` receives them into
    /// memory like any call: more of probegate's CPU, and measured slower
    /// with the uploader and with the bench's responder behind it
    /// (bench/README.md, fifth and ninth rounds).
    pub pipe_large_calls: bool,
    /// The pipes a piped call used are emptied and kept for the next
    /// large call, up to this much capacity in all (and at most
    /// [`KEEP_PIPES`](crate::upstream::pipes::KEEP_PIPES) of them), so
    /// that a call does not make and close its pipes. Idle kept pipes hold
    /// no data, but they count against the user's pipe allowance
    /// (`fs.pipe-user-pages-soft`, 64 MiB by default, shared by all of
    /// the user's processes); 0 keeps none.
    pub kept_pipe_bytes: usize,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        ForwardingConfig {
            mode: ForwardingMode::Request,
            pool_idle: ConfigDuration::secs(30),
            retry_methods: vec!["ping".to_string(), "upload".to_string()],
            pipeline_methods: vec!["ping".to_string()],
            pipeline_depth: 32,
            pipeline_linger: ConfigDuration(Duration::from_millis(1)),
            pipe_large_calls: true,
            kept_pipe_bytes: crate::upstream::pipes::KEEP_BYTES,
        }
    }
}

impl ForwardingConfig {
    /// Whether any calls are pipelined at all.
    pub fn pipelining(&self) -> bool {
        self.pipeline_depth > 1 && !self.pipeline_methods.is_empty()
    }

    /// Whether calls of `method` that died in flight are retried.
    pub fn retries(&self, method: &str) -> bool {
        self.retry_methods.iter().any(|m| m == method)
    }

    /// Whether calls of `method` may be pipelined.
    pub fn pipelines(&self, method: &str) -> bool {
        self.pipeline_depth > 1 && self.pipeline_methods.iter().any(|m| m == method)
    }
}

/// `[shutdown]`: graceful drain on SIGTERM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long health answers 503 while still serving, so the balancer
    /// takes the node out before connections are refused.
    pub drain_grace: ConfigDuration,
    /// How long live connections get to finish once accepting has stopped.
    pub timeout: ConfigDuration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_grace: ConfigDuration::secs(10),
            timeout: ConfigDuration::secs(30),
        }
    }
}

/// The most `runtime.threads`: far beyond any CPU count probegate is built
/// for; a larger number is a typo.
pub const MAX_RUNTIME_THREADS: usize = 1024;

/// `[runtime]`: the threads probegate's work runs on (`crate::runtime`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub threads: Threads,
}

/// `runtime.threads`: `"auto"` or a number of threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Threads {
    /// One per CPU this process may run on (its CPU affinity and cgroup
    /// quota, as `std::thread::available_parallelism` counts them).
    #[default]
    Auto,
    /// Exactly this many, from 1 to [`MAX_RUNTIME_THREADS`].
    Count(usize),
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Unexpected;

        struct ThreadsVisitor;

        /// `n` as a thread count, if it is one of 1 to the limit.
        fn count<N: TryInto<usize>>(n: N) -> Option<Threads> {
            n.try_into()
                .ok()
                .filter(|count| (1..=MAX_RUNTIME_THREADS).contains(count))
                .map(Threads::Count)
        }

        impl serde::de::Visitor<'_> for ThreadsVisitor {
            type Value = Threads;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "\"auto\" or a number of threads from 1 to {MAX_RUNTIME_THREADS}"
                )
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Threads, E> {
                count(n).ok_or_else(|| E::invalid_value(Unexpected::Signed(n), &self))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Threads, E> {
                count(n).ok_or_else(|| E::invalid_value(Unexpected::Unsigned(n), &self))
            }

            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Threads, E> {
                match word {
                    "auto" => Ok(Threads::Auto),
                    _ => Err(E::invalid_value(Unexpected::Str(word), &self)),
                }
            }
        }

        deserializer.deserialize_any(ThreadsVisitor)
    }
}

/// One entry of `probes.sources`: a named preset or a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSource {
    /// The label used in `probegate_probes_total{source}`: the preset name,
    /// or the CIDR as written.
    pub name: String,
    pub nets: Vec<IpNet>,
}

impl ProbeSource {
    /// The ranges health checkers of known clouds connect from.
    fn preset(name: &str) -> Option<Vec<IpNet>> {
        let nets: &[&str] = match name {
            // Aliyun SLB/CLB health checks (and the rest of its internal
            // service range): 100.64.0.0/10.
            "aliyun" => &["100.64.0.0/10"],
            // Google Cloud load balancer health checks, IPv4 and IPv6.
            "gcp" => &["35.191.0.0/16", "130.211.0.0/22", "2600:2d00:1:b029::/64"],
            _ => return None,
        };
        Some(nets.iter().filter_map(|n| n.parse().ok()).collect())
    }
}

impl FromStr for ProbeSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(nets) = ProbeSource::preset(text) {
            return Ok(ProbeSource {
                name: text.to_string(),
                nets,
            });
        }
        let net: IpNet = text.parse().map_err(|_| {
            format!("{text:?} is neither a preset (aliyun, gcp) nor a CIDR like \"100.64.0.0/10\"")
        })?;
        Ok(ProbeSource {
            name: text.to_string(),
            nets: vec![net],
        })
    }
}

impl<'de> Deserialize<'de> for ProbeSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
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

    /// Checks the rules that span keys or that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backends.is_empty() {
            return Err(ConfigError::invalid(
                "backends",
                "[]",
                "at least one [[backends]] entry with an address is required",
            ));
        }
        for (i, backend) in self.backends.iter().enumerate() {
            if backend.max_connections == 0 {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].max_connections"),
                    0,
                    "must be at least 1 (the backend's worker threads)",
                ));
            }
            if let Some(read_timeout) = backend.read_timeout {
                // A lane's connection idles up to pipeline_linger before
                // the pool's clock starts.
                let longest_idle =
                    self.forwarding.pool_idle.get() + self.forwarding.pipeline_linger.get();
                if !read_timeout.get().is_zero() && longest_idle >= read_timeout.get() {
                    return Err(ConfigError::invalid(
                        "forwarding.pool_idle",
                        self.forwarding.pool_idle,
                        format!(
                            "plus forwarding.pipeline_linger = {} must be below backends[{i}].read_timeout = {read_timeout}, or the backend closes pooled connections first",
                            self.forwarding.pipeline_linger
                        ),
                    ));
                }
            }
        }
        let positive = [
            ("health.interval", self.health.interval),
            ("health.timeout", self.health.timeout),
            ("timeouts.first_byte", self.timeouts.first_byte),
            ("timeouts.connect", self.timeouts.connect),
            ("timeouts.idle", self.timeouts.idle),
            ("timeouts.queue", self.timeouts.queue),
            ("timeouts.request", self.timeouts.request),
            ("timeouts.proxy_header", self.timeouts.proxy_header),
            ("forwarding.pool_idle", self.forwarding.pool_idle),
        ];
        for (key, value) in positive {
            if value.get().is_zero() {
                return Err(ConfigError::invalid(
                    key,
                    value,
                    "must be greater than zero",
                ));
            }
        }
        let counts = [
            ("listen.backlog", self.listen.backlog as usize),
            ("health.rise", self.health.rise as usize),
            ("health.fall", self.health.fall as usize),
            (
                "limits.max_client_connections",
                self.limits.max_client_connections,
            ),
            (
                "limits.max_connections_per_source",
                self.limits.max_connections_per_source,
            ),
        ];
        for (key, value) in counts {
            if value == 0 {
                return Err(ConfigError::invalid(key, value, "must be at least 1"));
            }
        }
        // A frame needs at least its 4-byte length and a message header.
        if self.limits.max_frame_bytes < 64 {
            return Err(ConfigError::invalid(
                "limits.max_frame_bytes",
                self.limits.max_frame_bytes,
                "must be at least 64 bytes",
            ));
        }
        if self.limits.max_buffered_bytes < self.limits.max_frame_bytes {
            return Err(ConfigError::invalid(
                "limits.max_buffered_bytes",
                self.limits.max_buffered_bytes,
                format!(
                    "must be at least limits.max_frame_bytes = {}, or one large request could never be buffered",
                    self.limits.max_frame_bytes
                ),
            ));
        }
        for (i, path) in self.health.paths.iter().enumerate() {
            if !path.starts_with('/') {
                return Err(ConfigError::invalid(
                    format!("health.paths[{i}]"),
                    format!("{path:?}"),
                    "must start with '/'",
                ));
            }
        }
        let method_lists = [
            ("forwarding.retry_methods", &self.forwarding.retry_methods),
            (
                "forwarding.pipeline_methods",
                &self.forwarding.pipeline_methods,
            ),
        ];
        for (key, methods) in method_lists {
            if let Some(i) = methods.iter().position(String::is_empty) {
                return Err(ConfigError::invalid(
                    format!("{key}[{i}]"),
                    "\"\"",
                    "must be a method name",
                ));
            }
        }
        if !(1..=MAX_PIPELINE_DEPTH).contains(&self.forwarding.pipeline_depth) {
            return Err(ConfigError::invalid(
                "forwarding.pipeline_depth",
                self.forwarding.pipeline_depth,
                format!("must be between 1 (no pipelining) and {MAX_PIPELINE_DEPTH}"),
            ));
        }
        if self.forwarding.kept_pipe_bytes > MAX_KEPT_PIPE_BYTES {
            return Err(ConfigError::invalid(
                "forwarding.kept_pipe_bytes",
                self.forwarding.kept_pipe_bytes,
                format!(
                    "must be at most {MAX_KEPT_PIPE_BYTES} ({} pipes of {} bytes, the most probegate keeps); 0 keeps none",
                    crate::upstream::pipes::KEEP_PIPES,
                    crate::upstream::pipes::SEGMENT_BYTES
                ),
            ));
        }
        if self.forwarding.pipeline_linger.get() > MAX_PIPELINE_LINGER {
            return Err(ConfigError::invalid(
                "forwarding.pipeline_linger",
                self.forwarding.pipeline_linger,
                format!(
                    "must be at most {} (an idle pipelined connection holds a backend slot)",
                    humantime::format_duration(MAX_PIPELINE_LINGER)
                ),
            ));
        }
        Ok(())
    }
}

impl confkit::Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        Config::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[backends]]\naddress = \"127.0.0.1:9090\"\n";

    #[test]
    fn runtime_threads_is_auto_or_a_count_from_1_to_the_limit() {
        let threads = |value: &str| {
            Config::parse(&format!("{MINIMAL}[runtime]\nthreads = {value}\n"))
                .map(|config| config.runtime.threads)
        };
        assert_eq!(
            Config::parse(MINIMAL).expect("parses").runtime.threads,
            Threads::Auto
        );
        assert_eq!(threads("\"auto\"").expect("auto"), Threads::Auto);
        assert_eq!(threads("1").expect("1"), Threads::Count(1));
        assert_eq!(
            threads("1024").expect("the limit"),
            Threads::Count(MAX_RUNTIME_THREADS)
        );
        for bad in [
            "0",
            "-1",
            "1025",
            "1.5",
            "true",
            "\"Auto\"",
            "\"many\"",
            "[2]",
            "{ n = 2 }",
        ] {
            let error = threads(bad).expect_err(bad).to_string();
            assert!(
                error.contains("runtime.threads")
                    && error.contains("\"auto\" or a number of threads from 1 to 1024"),
                "threads = {bad}: {error}"
            );
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::parse(MINIMAL).expect("minimal config parses");
        assert_eq!(config.backends[0].max_connections, 10);
        assert_eq!(config.health.paths, vec!["/health".to_string()]);
        assert_eq!(config.limits.max_frame_bytes, 16_384_000);
        assert_eq!(config.forwarding.mode, ForwardingMode::Request);
    }

    #[test]
    fn presets_and_cidrs_parse() {
        let text =
            format!("{MINIMAL}[probes]\nsources = [\"aliyun\", \"gcp\", \"127.100.0.0/16\"]\n");
        let config = Config::parse(&text).expect("parses");
        let names: Vec<_> = config
            .probes
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["aliyun", "gcp", "127.100.0.0/16"]);
        assert_eq!(
            config.probes.sources[0].nets,
            vec!["100.64.0.0/10".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let cases: &[(&str, &[&str])] = &[
            ("[listen]\npublik = \"0.0.0.0:1\"\n", &["publik"]),
            ("[timeouts]\nidle = \"5 parsecs\"\n", &["idle", "5 parsecs"]),
            ("[listen]\npublic = \"nowhere:xx\"\n", &["public", "nowhere:xx"]),
            ("[probes]\nsources = [\"azure\"]\n", &["sources", "azure"]),
            ("[[backends]]\naddress = \"127.0.0.1:1\"\nmax_connections = 0\n", &["backends[0].max_connections", "0"]),
            ("[health]\nrise = 0\n", &["health.rise", "0"]),
            ("[forwarding]\npipeline_depth = 0\n", &["forwarding.pipeline_depth", "0", "1024"]),
            ("[forwarding]\npipeline_linger = \"2s\"\n", &["forwarding.pipeline_linger", "2s", "1s"]),
            ("[forwarding]\nkept_pipe_bytes = 16777217\n", &["forwarding.kept_pipe_bytes", "16777217", "at most 16777216", "0 keeps none"]),
            ("[forwarding]\npipeline_methods = [\"ping\", \"\"]\n", &["forwarding.pipeline_methods[1]"]),
            (
                "[forwarding]\npool_idle = \"90s\"\n[[backends]]\naddress = \"127.0.0.1:1\"\nread_timeout = \"60s\"\n",
                &["forwarding.pool_idle", "1m 30s", "read_timeout = \"1m\""],
            ),
            (
                "[forwarding]\npool_idle = \"30s\"\npipeline_linger = \"1s\"\n[[backends]]\naddress = \"127.0.0.1:1\"\nread_timeout = \"31s\"\n",
                &["forwarding.pool_idle", "pipeline_linger = \"1s\"", "read_timeout = \"31s\""],
            ),
        ];
        for (extra, needles) in cases {
            let text = if extra.contains("[[backends]]") {
                extra.to_string()
            } else {
                format!("{MINIMAL}{extra}")
            };
            let message = Config::parse(&text).expect_err(extra).to_string();
            for needle in *needles {
                assert!(
                    message.contains(needle),
                    "{message:?} should mention {needle:?}"
                );
            }
        }
    }

    #[test]
    fn no_backends_is_an_error() {
        let message = Config::parse("").expect_err("empty").to_string();
        assert!(message.contains("backends"), "{message}");
    }
}
