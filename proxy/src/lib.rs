//! Sluice: an edge reverse proxy and load balancer built on Cloudflare's Pingora.
//!
//! `main.rs` only calls [`cli::main`]. Configuration is validated in [`config`] into an immutable
//! model, built into a [`snapshot::Snapshot`] (routes + pools), and served by [`edge::Edge`], which
//! selects backends through [`balancer`].

pub mod accesslog;
pub mod acme;
pub mod admin;
pub mod app;
pub mod balancer;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dns;
pub mod edge;
pub mod health;
pub mod import;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod otel;
pub mod pathnorm;
pub mod process;
pub mod ratelimit;
pub mod reload;
pub mod replace;
pub mod resources;
pub mod router;
pub mod rules;
pub mod snapshot;
pub mod sni;
pub mod store;
pub mod tlsfiles;
pub mod tracectx;
pub mod util;
pub mod warm;
