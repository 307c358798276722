//! The immutable runtime snapshot a request runs against: route table and built pools. Held in an
//! `ArcSwap` by [`crate::edge::Edge`]; a reload builds a new one and swaps it, so requests in
//! flight finish on the snapshot they started with.

use pingora::upstreams::peer::HttpPeer;

use crate::balancer::{Balancer, Slot, StateRegistry};
use crate::config::{Config, UpstreamSpec};
use crate::router::Router;

/// One pool ready to serve: its balancer and a prepared peer per member.
#[derive(Debug)]
pub struct Pool {
    /// The `[upstreams.NAME]` name.
    pub name: String,
    /// Member selection.
    pub balancer: Balancer,
    /// A peer template per member, same order as the balancer's slots; cloned per attempt.
    pub peers: Vec<HttpPeer>,
    /// Extra attempts after a connect failure.
    pub retries: u32,
}

impl Pool {
    /// Build the pool for `spec`, reusing live backend state from `registry`.
    pub fn new(spec: &UpstreamSpec, registry: &StateRegistry) -> Self {
        let slots = spec
            .backends
            .iter()
            .map(|b| Slot {
                key: b.name.clone(),
                weight: b.weight,
                state: registry.get(&spec.name, b.addr),
            })
            .collect();
        let peers = spec
            .backends
            .iter()
            .map(|b| {
                let mut p = HttpPeer::new(b.addr, false, String::new());
                p.options.connection_timeout = Some(spec.connect_timeout);
                p.options.read_timeout = Some(spec.read_timeout);
                p.options.write_timeout = Some(spec.write_timeout);
                p.options.idle_timeout = Some(spec.keepalive_timeout);
                p
            })
            .collect();
        Pool {
            name: spec.name.clone(),
            balancer: Balancer::new(spec.strategy, slots),
            peers,
            retries: spec.retries,
        }
    }
}

/// Everything the request path reads, built once per config generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Routes -> pool index.
    pub router: Router,
    /// Pools, indexed as in [`Config::upstreams`].
    pub pools: Vec<Pool>,
    /// Which config generation this is (1 for the first load).
    pub generation: u64,
}

impl Snapshot {
    /// Build a snapshot from a validated config.
    pub fn build(config: &Config, registry: &StateRegistry, generation: u64) -> Self {
        Snapshot {
            router: Router::new(&config.routes),
            pools: config
                .upstreams
                .iter()
                .map(|u| Pool::new(u, registry))
                .collect(),
            generation,
        }
    }
}
