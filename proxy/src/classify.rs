//! Source classes: who is connecting, decided from the client address alone.
//!
//! This is the connection filter that runs right after accept (and after the
//! PROXY header, whose address is the real client's). Denied sources are
//! closed before a byte is read; probe sources are the load balancer's health
//! checkers and are never forwarded, whatever they send: that is the
//! guarantee that a health check can never reach, and so never pin, a backend
//! thread.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Config;

/// What the address says about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// In `clients.deny`, or outside a non-empty `clients.allow`.
    Denied,
    /// A health checker: the name of the matching `probes.sources` entry.
    Probe(String),
    /// Anyone else: may use the Thrift path.
    Client,
}

/// The compiled source rules.
#[derive(Debug, Clone)]
pub struct Classifier {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
    /// (probe source name, its ranges), in config order: the first match names it.
    probes: Vec<(String, Vec<IpNet>)>,
}

impl Classifier {
    pub fn new(config: &Config) -> Classifier {
        Classifier {
            deny: config.clients.deny.clone(),
            allow: config.clients.allow.clone(),
            probes: config
                .probes
                .sources
                .iter()
                .map(|s| (s.name.clone(), s.nets.clone()))
                .collect(),
        }
    }

    /// The names used as the `source` label of probe metrics.
    pub fn probe_source_names(&self) -> Vec<String> {
        self.probes.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Classifies a client address. Deny wins over everything; a probe
    /// source is a probe even when `clients.allow` does not list it (the
    /// balancer must always get its answer).
    pub fn classify(&self, addr: IpAddr) -> Source {
        let addr = canonical(addr);
        if self.deny.iter().any(|net| net.contains(&addr)) {
            return Source::Denied;
        }
        if let Some((name, _)) = self
            .probes
            .iter()
            .find(|(_, nets)| nets.iter().any(|net| net.contains(&addr)))
        {
            return Source::Probe(name.clone());
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&addr)) {
            return Source::Denied;
        }
        Source::Client
    }
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is matched
/// against IPv4 ranges.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier(extra: &str) -> Classifier {
        let text = format!("[[backends]]\naddress = \"127.0.0.1:9\"\n{extra}");
        Classifier::new(&Config::parse(&text).expect("test config parses"))
    }

    #[test]
    fn table() {
        let rules = classifier(
            "[probes]\nsources = [\"aliyun\", \"gcp\", \"127.100.0.0/16\"]\n\
             [clients]\ndeny = [\"10.9.0.0/16\", \"100.64.1.0/24\"]\n",
        );
        let allow_some =
            classifier("[probes]\nsources = [\"aliyun\"]\n[clients]\nallow = [\"10.0.0.0/8\"]\n");
        let rows: &[(&Classifier, &str, Source)] = &[
            (&rules, "100.109.225.0", Source::Probe("aliyun".into())),
            (&rules, "100.64.0.1", Source::Probe("aliyun".into())),
            (&rules, "100.128.0.1", Source::Client),
            (&rules, "35.191.3.4", Source::Probe("gcp".into())),
            (&rules, "130.211.3.255", Source::Probe("gcp".into())),
            (&rules, "130.211.4.0", Source::Client),
            (
                &rules,
                "127.100.0.1",
                Source::Probe("127.100.0.0/16".into()),
            ),
            (
                &rules,
                "::ffff:127.100.9.9",
                Source::Probe("127.100.0.0/16".into()),
            ),
            (&rules, "127.0.0.1", Source::Client),
            (&rules, "10.9.3.3", Source::Denied),
            // deny wins over a probe range
            (&rules, "100.64.1.7", Source::Denied),
            (&rules, "2600:2d00:1:b029::5", Source::Probe("gcp".into())),
            (&allow_some, "10.1.2.3", Source::Client),
            (&allow_some, "192.168.1.1", Source::Denied),
            // probe sources are answered even outside `allow`
            (&allow_some, "100.100.0.1", Source::Probe("aliyun".into())),
        ];
        for (classifier, addr, want) in rows {
            let ip: IpAddr = addr.parse().expect("test address");
            assert_eq!(&classifier.classify(ip), want, "{addr}");
        }
    }
}
