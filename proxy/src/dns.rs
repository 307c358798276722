//! Backends given by name (`host:port`): every A and AAAA address of the name is a member of its
//! pool. Names are looked up with hickory-resolver (the system's `/etc/resolv.conf` and hosts
//! file, or `[dns] nameservers`): once before the process serves, for new names on reload, and
//! in the background ([`DnsService`], run by `app.rs`) every `resolve_interval_ms`, or sooner
//! when the records' TTL ends. A changed set of addresses builds a new snapshot: new requests go
//! to the new members, requests in flight finish on the old ones. A failed lookup keeps the last
//! good addresses (logged and counted). Lookups never run on the request path.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

use crate::config::{BackendAddr, Config, DnsSettings};

/// The current addresses of every backend name, sorted (name -> addresses).
pub type Names = BTreeMap<String, Vec<IpAddr>>;

/// The shortest wait before a name is looked up again, whatever its TTL says (a TTL of 0 must
/// not make a busy loop).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// A resolver for `settings`: its name servers, or the system's configuration.
pub fn resolver(settings: &DnsSettings) -> Result<TokioResolver, String> {
    let mut builder = if settings.nameservers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
    } else {
        let mut group = NameServerConfigGroup::new();
        for a in &settings.nameservers {
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[a.ip()],
                a.port(),
                true,
            ));
        }
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            TokioConnectionProvider::default(),
        )
    };
    let o = builder.options_mut();
    o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    o.timeout = settings.timeout;
    o.attempts = 1;
    Ok(builder.build())
}

/// Every address of `host`, sorted, and until when they are valid (their TTL).
pub async fn lookup(r: &TokioResolver, host: &str) -> Result<(Vec<IpAddr>, Instant), String> {
    let found = r.lookup_ip(host).await.map_err(|e| e.to_string())?;
    let mut addrs: Vec<IpAddr> = found.iter().collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no A or AAAA record".into());
    }
    Ok((addrs, found.valid_until()))
}

/// The names `config`'s pools use, each with the shortest `resolve_interval` of the pools
/// that use it, and the key path of its first use (for error messages).
pub fn names_of(config: &Config) -> BTreeMap<String, (Duration, String)> {
    let mut out: BTreeMap<String, (Duration, String)> = BTreeMap::new();
    for u in &config.upstreams {
        for (i, b) in u.backends.iter().enumerate() {
            if let BackendAddr::Name { host, .. } = &b.addr {
                let path = format!("upstreams.{}.backends[{i}].addr", u.name);
                let e = out
                    .entry(host.clone())
                    .or_insert((u.resolve_interval, path));
                e.0 = e.0.min(u.resolve_interval);
            }
        }
    }
    out
}

/// The addresses of every name `config` uses: those in `known` as they are, the others looked
/// up now (blocking, on a thread and runtime of its own: at start, by `--check`, on reload).
/// `Err` lists each name that did not resolve as (key path, reason).
pub fn resolve_blocking(config: &Config, known: &Names) -> Result<Names, Vec<(String, String)>> {
    let wanted = names_of(config);
    let mut out = Names::new();
    let mut missing = Vec::new();
    for (host, (_, path)) in wanted {
        match known.get(&host) {
            Some(a) => {
                out.insert(host, a.clone());
            }
            None => missing.push((host, path)),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let settings = config.dns.clone();
    let looked_up = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let r = resolver(&settings)?;
                let mut results = Vec::with_capacity(missing.len());
                for (host, _) in &missing {
                    results.push(lookup(&r, host).await.map(|(a, _)| a));
                }
                Ok::<_, String>(results)
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the lookup thread panicked".into()))
    });
    let results = match looked_up {
        Ok(r) => r,
        Err(e) => {
            return Err(missing
                .into_iter()
                .map(|(host, path)| (path, format!("`{host}` cannot be looked up: {e}")))
                .collect())
        }
    };
    let mut problems = Vec::new();
    for ((host, path), r) in missing.into_iter().zip(results) {
        match r {
            Ok(a) => {
                out.insert(host, a);
            }
            Err(e) => problems.push((path, format!("`{host}` does not resolve: {e}"))),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The outcome label of `sluice_dns_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// Same addresses as before.
    Unchanged,
    /// Other addresses: a new snapshot was built.
    Changed,
    /// The lookup failed; the last good addresses stay.
    Failed,
}

impl LookupResult {
    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            LookupResult::Unchanged => "unchanged",
            LookupResult::Changed => "changed",
            LookupResult::Failed => "failed",
        }
    }
}

/// Lookups by name and outcome.
pub fn lookups_metric() -> Result<prometheus::IntCounterVec, prometheus::Error> {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "sluice_dns_lookups_total",
            "Background lookups of backend names, by name and outcome (unchanged, changed, failed).",
        ),
        &["name", "result"],
    )
}

/// When each name is due, and the next wake-up.
#[derive(Debug, Default)]
pub struct Schedule {
    due: BTreeMap<String, Instant>,
}

impl Schedule {
    /// Names of `wanted` due at `now` (new names are due at once; names no longer wanted are
    /// forgotten).
    pub fn due(
        &mut self,
        wanted: &BTreeMap<String, (Duration, String)>,
        now: Instant,
    ) -> Vec<String> {
        self.due.retain(|h, _| wanted.contains_key(h));
        wanted
            .iter()
            .filter(|(h, (interval, _))| {
                *self.due.entry((*h).clone()).or_insert(now + *interval) <= now
            })
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// `host` was looked up at `now`: next at `interval`, or when its records expire if that is
    /// sooner (but not before [`MIN_REFRESH`]).
    pub fn done(
        &mut self,
        host: &str,
        now: Instant,
        interval: Duration,
        valid_until: Option<Instant>,
    ) {
        let mut next = now + interval;
        if let Some(v) = valid_until {
            next = next.min(v.max(now + MIN_REFRESH));
        }
        self.due.insert(host.to_owned(), next);
    }

    /// The earliest due time, if any.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_due_by_interval_or_ttl_with_a_floor() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let wanted: BTreeMap<String, (Duration, String)> = [
            ("a".to_owned(), (Duration::from_secs(30), String::new())),
            ("b".to_owned(), (Duration::from_secs(10), String::new())),
        ]
        .into_iter()
        .collect();
        // Known at start: first due after their interval.
        assert!(s.due(&wanted, t0).is_empty());
        assert_eq!(s.due(&wanted, t0 + Duration::from_secs(10)), ["b"]);
        // A 2 s TTL is sooner than the interval; a 0 s TTL waits the floor.
        let t1 = t0 + Duration::from_secs(10);
        s.done(
            "b",
            t1,
            Duration::from_secs(10),
            Some(t1 + Duration::from_secs(2)),
        );
        assert_eq!(s.next(), Some(t1 + Duration::from_secs(2)));
        s.done("b", t1, Duration::from_secs(10), Some(t1));
        assert_eq!(s.next(), Some(t1 + MIN_REFRESH));
        // A long TTL does not delay past the interval.
        s.done(
            "b",
            t1,
            Duration::from_secs(10),
            Some(t1 + Duration::from_secs(3600)),
        );
        assert_eq!(s.next(), Some(t1 + Duration::from_secs(10)));
        // A name no longer used is dropped.
        let only_a: BTreeMap<_, _> = wanted.into_iter().filter(|(h, _)| h == "a").collect();
        s.due(&only_a, t1);
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(30)));
    }
}
