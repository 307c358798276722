//! The Pingora floor: the smallest Pingora 0.9.1 proxy (one upstream, no hooks but
//! `upstream_peer`), with the same allocator, thread count, keep-alive pool and header-case
//! setting as Sluice.
//! `benches/proxy.sh` measures it beside Sluice so that what Sluice adds on top of Pingora is
//! told apart from what Pingora itself costs.
//!
//! Usage: `pingora_floor LISTEN UPSTREAM [THREADS] [KEEPALIVE]`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static GLOBAL: sluice::util::alloc::MiMalloc = sluice::util::alloc::MiMalloc;

struct Floor(HttpPeer);

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) {}
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.0.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args.get(1).expect("LISTEN");
    let upstream = args.get(2).expect("UPSTREAM");
    let threads = args.get(3).map_or(1, |t| t.parse().expect("THREADS"));
    let keepalive = args.get(4).map_or(128, |k| k.parse().expect("KEEPALIVE"));
    // Sluice's default (`[server] preserve_header_case = false`): no case maps.
    pingora::http::set_preserve_h1_header_case(false);
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: keepalive,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let peer = HttpPeer::new(upstream.as_str(), false, String::new());
    let mut svc = pingora::proxy::http_proxy_service(&server.configuration, Floor(peer));
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever();
}
