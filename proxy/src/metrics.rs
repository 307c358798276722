//! Prometheus metrics on the `prometheus` crate: the process's [`Metrics`] (a `Registry` owned
//! by the process and passed to each component, never a global), the request-path families
//! whose handles the snapshot resolves once per generation, the closed label enums, and
//! [`Live`], the collector for values read from live state at scrape time.
//!
//! Components register their own families: the cache (`cache/stats.rs`), the rate limiter
//! (its Redis errors), the Redis breakers (`store/`), the backends (`snapshot.rs`) and the
//! listener's open connections (`app.rs`). The request path only adds to handles resolved
//! before it runs (an `IntCounter` or `Histogram` per series), so a request does one atomic add
//! per counter and one observation per histogram; labels come only from the config (route,
//! upstream, tier and backend names) and from the enums below.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use prometheus::Error;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Request methods as metric labels (anything else is `OTHER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// OPTIONS
    Options,
    /// Any other method.
    Other,
}

impl Method {
    const COUNT: usize = 8;

    /// The label for `m`.
    pub fn of(m: &http::Method) -> Method {
        match *m {
            http::Method::GET => Method::Get,
            http::Method::HEAD => Method::Head,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::DELETE => Method::Delete,
            http::Method::PATCH => Method::Patch,
            http::Method::OPTIONS => Method::Options,
            _ => Method::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// Status classes as labels; `none` when no response was sent (the client left first).
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => (status / 100) as usize,
        _ => 0,
    }
}

/// A rate-limit outcome, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitResult {
    /// Under the limit.
    Allowed,
    /// Over the limit and rejected.
    Limited,
    /// Over the limit, let through because the mode is `shadow`.
    ShadowLimited,
}

impl LimitResult {
    const ALL: [LimitResult; 3] = [
        LimitResult::Allowed,
        LimitResult::Limited,
        LimitResult::ShadowLimited,
    ];

    /// The label of this result.
    pub fn label(self) -> &'static str {
        match self {
            LimitResult::Allowed => "allowed",
            LimitResult::Limited => "limited",
            LimitResult::ShadowLimited => "shadow_limited",
        }
    }
}

/// Why Sluice answered a routed request itself instead of proxying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeAnswer {
    /// The route's `redirect`.
    Redirect,
    /// The client address is outside `allow` or inside `deny` (403).
    AccessDenied,
    /// The request body is over `max_body_bytes` (413).
    BodyTooLarge,
    /// A CORS preflight from an allowed origin (204).
    CorsPreflight,
    /// A CORS preflight from an origin not allowed (403).
    CorsDenied,
    /// The route has `require_client_cert` and the client showed no verified certificate (403).
    ClientCertRequired,
}

impl EdgeAnswer {
    /// How many reasons there are.
    pub const COUNT: usize = 6;

    /// The label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            EdgeAnswer::Redirect => "redirect",
            EdgeAnswer::AccessDenied => "access_denied",
            EdgeAnswer::BodyTooLarge => "body_too_large",
            EdgeAnswer::CorsPreflight => "cors_preflight",
            EdgeAnswer::CorsDenied => "cors_denied",
            EdgeAnswer::ClientCertRequired => "client_cert_required",
        }
    }
}

/// What a reload attempt ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config serves.
    Ok,
    /// The file had problems; the old config serves.
    Invalid,
    /// A restart-only setting changed; the old config serves.
    Refused,
}

impl ReloadResult {
    const ALL: [ReloadResult; 3] = [
        ReloadResult::Ok,
        ReloadResult::Invalid,
        ReloadResult::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Invalid => "invalid",
            ReloadResult::Refused => "refused",
        }
    }
}

/// Register `collector` on `registry` and hand it back: its clones share their series with
/// the registered one.
pub fn registered<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// Every family the process registers itself, and its registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    edge_answers: IntCounterVec,
    upstream_duration: HistogramVec,
    ratelimit_checks: IntCounterVec,
    ratelimit_near_limit: IntCounterVec,
    in_flight: IntGauge,
    websockets: IntGauge,
    generation: IntGauge,
    reloads: [IntCounter; 3],
    unrouted: RouteMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with the process-level families (requests, durations, rate-limit checks,
    /// gauges of requests and WebSockets, reloads, build information). Fails only if a name
    /// in this module is malformed, which the unit tests rule out.
    pub fn new() -> Result<Self, Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("sluice_build_info", "Build information."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registered(&registry, build_info)?;
        let generation = registered(
            &registry,
            IntGauge::new(
                "sluice_config_generation",
                "Generation of the config now serving (1 at start, +1 per applied reload or change of a backend name's addresses).",
            )?,
        )?;
        let reload_family = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sluice_config_reloads_total",
                    "Config reload attempts by result.",
                ),
                &["result"],
            )?,
        )?;
        let reloads = ReloadResult::ALL.map(|r| reload_family.with_label_values(&[r.label()]));
        let requests = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sluice_requests_total",
                    "Finished requests by route, upstream, method and status class.",
                ),
                &["route", "upstream", "method", "status_class"],
            )?,
        )?;
        let request_duration = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "sluice_request_duration_seconds",
                    "Whole-request duration by route.",
                )
                .buckets(BUCKETS.to_vec()),
                &["route", "upstream"],
            )?,
        )?;
        let edge_answers = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sluice_edge_answers_total",
                    "Routed requests Sluice answered itself (redirects, refusals, CORS preflights), by route and reason.",
                ),
                &["route", "reason"],
            )?,
        )?;
        let upstream_duration = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "sluice_upstream_duration_seconds",
                    "Time from sending a request to a backend to its response header, per attempt.",
                )
                .buckets(BUCKETS.to_vec()),
                &["upstream"],
            )?,
        )?;
        let in_flight = registered(
            &registry,
            IntGauge::new(
                "sluice_requests_in_flight",
                "Requests being served (upgraded WebSockets count until they close).",
            )?,
        )?;
        let websockets = registered(
            &registry,
            IntGauge::new(
                "sluice_websockets_open",
                "Upgraded (WebSocket) connections open.",
            )?,
        )?;
        let ratelimit_checks = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sluice_ratelimit_checks_total",
                    "Rate-limit checks by tier and result.",
                ),
                &["tier", "result"],
            )?,
        )?;
        let ratelimit_near_limit = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sluice_ratelimit_near_limit_total",
                    "Allowed requests that left less than 10% of their limit.",
                ),
                &["tier"],
            )?,
        )?;
        let unrouted =
            RouteMetrics::new(&requests, &request_duration, &edge_answers, "none", "none");
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            edge_answers,
            upstream_duration,
            ratelimit_checks,
            ratelimit_near_limit,
            in_flight,
            websockets,
            generation,
            reloads,
            unrouted,
        })
    }

    /// The registry components register their own collectors on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The series of route `route` sending to `upstream` (resolved once per snapshot; a
    /// reload keeps the counts, which live in the registry under the same labels).
    pub fn route(&self, route: &str, upstream: &str) -> RouteMetrics {
        RouteMetrics::new(
            &self.requests,
            &self.request_duration,
            &self.edge_answers,
            route,
            upstream,
        )
    }

    /// Requests that matched no route.
    pub fn unrouted(&self) -> &RouteMetrics {
        &self.unrouted
    }

    /// The upstream latency of pool `upstream`.
    pub fn pool(&self, upstream: &str) -> PoolMetrics {
        PoolMetrics {
            upstream_duration: self.upstream_duration.with_label_values(&[upstream]),
        }
    }

    /// The rate-limit counters of `tier`.
    pub fn tier(&self, tier: &str) -> TierMetrics {
        TierMetrics {
            results: LimitResult::ALL
                .map(|r| self.ratelimit_checks.with_label_values(&[tier, r.label()])),
            near_limit: self.ratelimit_near_limit.with_label_values(&[tier]),
        }
    }

    /// Count a reload attempt.
    pub fn reload(&self, result: ReloadResult) {
        self.reloads[result as usize].inc();
    }

    /// Record the generation now serving.
    pub fn set_generation(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// WebSockets open now.
    pub fn websockets(&self) -> i64 {
        self.websockets.get()
    }

    /// One in-flight request until the guard drops.
    pub fn request_guard(&self) -> GaugeGuard<'_> {
        GaugeGuard::new(&self.in_flight)
    }

    /// One open WebSocket until the guard drops.
    pub fn websocket_guard(&self) -> GaugeGuard<'_> {
        GaugeGuard::new(&self.websockets)
    }

    /// The text exposition (format 0.0.4) of every registered family.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding to a Vec fails only on a family without metrics or with an unknown type,
        // which `gather` never returns.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics exposition failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Counters of one route (and the upstream it sends to).
pub struct RouteMetrics {
    family: IntCounterVec,
    route: String,
    upstream: String,
    /// One series per method and status class, resolved on first use, so only the
    /// combinations that happen are exported; later uses are one load and one add.
    requests: [[OnceLock<IntCounter>; CLASSES.len()]; Method::COUNT],
    duration: Histogram,
    answers_family: IntCounterVec,
    /// One series per [`EdgeAnswer`], resolved on first use.
    answers: [OnceLock<IntCounter>; EdgeAnswer::COUNT],
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl RouteMetrics {
    fn new(
        requests: &IntCounterVec,
        durations: &HistogramVec,
        answers: &IntCounterVec,
        route: &str,
        upstream: &str,
    ) -> Self {
        RouteMetrics {
            family: requests.clone(),
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            requests: Default::default(),
            duration: durations.with_label_values(&[route, upstream]),
            answers_family: answers.clone(),
            answers: Default::default(),
        }
    }

    /// Count one request Sluice answered itself, and why.
    pub fn answered(&self, why: EdgeAnswer) {
        self.answers[why as usize]
            .get_or_init(|| {
                self.answers_family
                    .with_label_values(&[self.route.as_str(), why.label()])
            })
            .inc();
    }

    /// Count one finished request (`status` 0 when nothing was answered).
    pub fn record(&self, method: Method, status: u16, took: Duration) {
        let class = class_index(status);
        // `with_label_values` fails only when the number of values differs from the
        // family's four label names, which is fixed here.
        self.requests[method as usize][class]
            .get_or_init(|| {
                self.family.with_label_values(&[
                    self.route.as_str(),
                    self.upstream.as_str(),
                    method.label(),
                    CLASSES[class],
                ])
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }
}

/// Series of one pool.
#[derive(Debug)]
pub struct PoolMetrics {
    upstream_duration: Histogram,
}

impl PoolMetrics {
    /// Record the time from sending a request to a backend to its response header.
    pub fn upstream_took(&self, took: Duration) {
        self.upstream_duration.observe(took.as_secs_f64());
    }
}

/// Rate-limit counters of one tier (or `route` for routes with their own limit).
#[derive(Debug)]
pub struct TierMetrics {
    results: [IntCounter; 3],
    near_limit: IntCounter,
}

impl TierMetrics {
    /// Count one check; `near` when an allowed request left under 10% of the limit.
    pub fn record(&self, result: LimitResult, near: bool) {
        self.results[result as usize].inc();
        if near {
            self.near_limit.inc();
        }
    }
}

/// RAII unit of a gauge (an in-flight request, an open WebSocket).
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a IntGauge);

impl<'a> GaugeGuard<'a> {
    fn new(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Whether a [`Live`] family is a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (read from a counter kept elsewhere).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One family of a [`Live`] collector.
#[derive(Debug, Clone, Copy)]
pub struct LiveFamily {
    /// The metric name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its variable label names, in the order [`Samples::add`] takes the values.
    pub labels: &'static [&'static str],
}

/// The values a [`Live`] collector reads at one scrape.
#[derive(Debug)]
pub struct Samples<'a> {
    families: &'a [LiveFamily],
    const_labels: &'a [proto::LabelPair],
    out: Vec<MetricFamily>,
}

impl Samples<'_> {
    /// One sample of family `family` (its index in the collector's list) with `labels`
    /// (values for its label names, in order).
    pub fn add(&mut self, family: usize, labels: &[&str], value: f64) {
        let (Some(spec), Some(mf)) = (self.families.get(family), self.out.get_mut(family)) else {
            return;
        };
        let mut pairs: Vec<proto::LabelPair> = spec
            .labels
            .iter()
            .zip(labels)
            .map(|(n, v)| label_pair(n, v))
            .chain(self.const_labels.iter().cloned())
            .collect();
        pairs.sort_by(|a, b| a.name().cmp(b.name()));
        let mut m = proto::Metric::from_label(pairs);
        match spec.kind {
            Kind::Counter => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        mf.mut_metric().push(m);
    }
}

fn label_pair(name: &str, value: &str) -> proto::LabelPair {
    let mut p = proto::LabelPair::default();
    p.set_name(name.to_owned());
    p.set_value(value.to_owned());
    p
}

type ReadFn = Box<dyn Fn(&mut Samples<'_>) + Send + Sync>;

/// A collector of families whose values are read from live state at scrape time (backend
/// health, store sizes, breaker states, open connections): nothing is kept or updated on the
/// request path for them.
pub struct Live {
    families: &'static [LiveFamily],
    descs: Vec<Desc>,
    const_labels: Vec<proto::LabelPair>,
    read: ReadFn,
}

impl Live {
    /// A collector of `families`, with `const_labels` on every sample (so that two
    /// components can export the same family under different values), filled by `read` at
    /// each scrape.
    pub fn new(
        families: &'static [LiveFamily],
        const_labels: &[(&str, &str)],
        read: impl Fn(&mut Samples<'_>) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let consts: HashMap<String, String> = const_labels
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let descs = families
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.to_owned(),
                    f.help.to_owned(),
                    f.labels.iter().map(|l| (*l).to_owned()).collect(),
                    consts.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Live {
            families,
            descs,
            const_labels: const_labels.iter().map(|(n, v)| label_pair(n, v)).collect(),
            read: Box::new(read),
        })
    }
}

impl Collector for Live {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let out = self
            .families
            .iter()
            .map(|f| {
                let mut mf = MetricFamily::default();
                mf.set_name(f.name.to_owned());
                mf.set_help(f.help.to_owned());
                mf.set_field_type(match f.kind {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Gauge => MetricType::GAUGE,
                });
                mf
            })
            .collect();
        let mut samples = Samples {
            families: self.families,
            const_labels: &self.const_labels,
            out,
        };
        (self.read)(&mut samples);
        samples.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn the_process_families_register_and_render() {
        let m = Metrics::new().unwrap();
        m.set_generation(3);
        m.reload(ReloadResult::Invalid);
        let r = m.route("api", "pool");
        r.record(Method::Get, 204, Duration::from_micros(1_000));
        r.record(Method::Get, 204, Duration::from_micros(1_001));
        r.record(Method::Other, 0, Duration::from_secs(60));
        m.tier("free").record(LimitResult::Limited, false);
        let text = m.render();
        assert!(text.contains("sluice_config_generation 3\n"), "{text}");
        assert!(
            text.contains("sluice_config_reloads_total{result=\"invalid\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_requests_total{method=\"GET\",route=\"api\",status_class=\"2xx\",upstream=\"pool\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("status_class=\"none\""), "{text}");
        // Only the combinations that happened are exported.
        assert!(!text.contains("method=\"POST\""), "{text}");
        // Buckets are cumulative and inclusive of their upper bound.
        assert!(
            text.contains(
                "sluice_request_duration_seconds_bucket{route=\"api\",upstream=\"pool\",le=\"0.001\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sluice_request_duration_seconds_bucket{route=\"api\",upstream=\"pool\",le=\"0.0025\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sluice_request_duration_seconds_bucket{route=\"api\",upstream=\"pool\",le=\"+Inf\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("sluice_ratelimit_checks_total{result=\"limited\",tier=\"free\"} 1\n"),
            "{text}"
        );
        assert!(
            line(&text, "sluice_build_info{version=").is_some(),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new().unwrap();
        m.route("a\"b\\c", "p")
            .record(Method::Get, 200, Duration::ZERO);
        let text = m.render();
        assert!(text.contains(r#"route="a\"b\\c""#), "{text}");
    }

    #[test]
    fn gauge_guards_count_while_held() {
        let m = Metrics::new().unwrap();
        let a = m.request_guard();
        let _b = m.request_guard();
        let _w = m.websocket_guard();
        assert_eq!((m.in_flight(), m.websockets()), (2, 1));
        drop(a);
        assert_eq!(m.in_flight(), 1);
    }

    #[test]
    fn live_families_merge_across_collectors_by_const_label() {
        static FAMILIES: [LiveFamily; 1] = [LiveFamily {
            name: "x_total",
            help: "X.",
            kind: Kind::Counter,
            labels: &["to"],
        }];
        let m = Metrics::new().unwrap();
        for (who, n) in [("a", 1.0), ("b", 2.0)] {
            let live = Live::new(&FAMILIES, &[("component", who)], move |s| {
                s.add(0, &["open"], n)
            })
            .unwrap();
            m.registry().register(Box::new(live)).unwrap();
        }
        let text = m.render();
        assert!(
            text.contains("x_total{component=\"a\",to=\"open\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_total{component=\"b\",to=\"open\"} 2\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE x_total counter").count(), 1, "{text}");
    }

    #[test]
    fn status_classes() {
        assert_eq!(CLASSES[class_index(204)], "2xx");
        assert_eq!(CLASSES[class_index(503)], "5xx");
        assert_eq!(CLASSES[class_index(0)], "none");
    }
}
