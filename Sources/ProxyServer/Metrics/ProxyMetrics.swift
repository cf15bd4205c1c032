import CoreMetrics
import Metrics
import Prometheus

/// The proxy's metrics through swift-metrics, exported by swift-prometheus from a registry of
/// this server's own (no global bootstrap, so several servers in one process stay apart).
/// Label values are bounded: route templates, status codes and cache outcomes, never ids.
final class ProxyMetrics {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private var requestCounters: [String: CoreMetrics.Counter] = [:]
    private var durationTimers: [String: CoreMetrics.Timer] = [:]
    private var upstreamCounters: [String: CoreMetrics.Counter] = [:]
    private var cacheCounters: [String: CoreMetrics.Counter] = [:]
    /// What the cache's own counts were at the last export (they are the one source of truth;
    /// the Prometheus counters advance by the difference).
    private var exported: [String: Int] = [:]
    private var gauges: [String: CoreMetrics.Gauge] = [:]

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
        ]
        self.factory = factory
    }

    /// Records hits on one route without a lookup per request (the hit path keeps it).
    final class HitRecorder {
        let counter: CoreMetrics.Counter
        let timer: CoreMetrics.Timer
        init(counter: CoreMetrics.Counter, timer: CoreMetrics.Timer) {
            self.counter = counter
            self.timer = timer
        }

        func record(_ duration: Duration) {
            counter.increment()
            timer.recordNanoseconds(nanoseconds(duration))
        }
    }

    private var hitRecorders: [String: HitRecorder] = [:]

    /// The recorder of 200 hits on `route`: the same series `requestFinished` counts.
    func hitRecorder(route: String) -> HitRecorder {
        if let recorder = hitRecorders[route] { return recorder }
        let recorder = HitRecorder(counter: requestCounter(route: route, status: 200, cache: "hit"), timer: durationTimer(route: route))
        hitRecorders[route] = recorder
        return recorder
    }

    /// One answered request.
    func requestFinished(route: String, status: Int, cache: String, duration: Duration) {
        requestCounter(route: route, status: status, cache: cache).increment()
        durationTimer(route: route).recordNanoseconds(nanoseconds(duration))
    }

    private func requestCounter(route: String, status: Int, cache: String) -> CoreMetrics.Counter {
        let key = "\(route) \(status) \(cache)"
        if let counter = requestCounters[key] { return counter }
        let made = CoreMetrics.Counter(label: "pixxel_proxy_requests_total",
                                       dimensions: [("route", route), ("status", String(status)), ("cache", cache)], factory: factory)
        requestCounters[key] = made
        return made
    }

    private func durationTimer(route: String) -> CoreMetrics.Timer {
        if let timer = durationTimers[route] { return timer }
        let made = CoreMetrics.Timer(label: "pixxel_proxy_request_duration_seconds", dimensions: [("route", route)], factory: factory)
        durationTimers[route] = made
        return made
    }

    private var upstreamTimers: [String: CoreMetrics.Timer] = [:]

    /// One upstream call: its outcome (a status code, or the kind of failure) and how long it took.
    func upstreamRequest(route: String, outcome: String, duration: Duration) {
        let timer = upstreamTimers[route] ?? {
            let made = CoreMetrics.Timer(label: "pixxel_proxy_upstream_duration_seconds", dimensions: [("route", route)], factory: factory)
            upstreamTimers[route] = made
            return made
        }()
        timer.recordNanoseconds(nanoseconds(duration))
        upstreamRequest(route: route, outcome: outcome)
    }

    /// One upstream call and its outcome, without a duration (refused by the budget).
    func upstreamRequest(route: String, outcome: String) {
        let key = "\(route) \(outcome)"
        let counter = upstreamCounters[key] ?? {
            let made = CoreMetrics.Counter(label: "pixxel_proxy_upstream_requests_total",
                                           dimensions: [("route", route), ("outcome", outcome)], factory: factory)
            upstreamCounters[key] = made
            return made
        }()
        counter.increment()
    }

    /// The Prometheus text, after bringing cache counters and gauges up to date.
    func render(counts: [(name: String, value: Int)], labeledCounts: [(name: String, labels: [(String, String)], value: Int)] = [],
                gaugeValues: [(name: String, labels: [(String, String)], value: Double)]) -> [UInt8] {
        for (name, labels, value) in counts.map({ ($0.name, [(String, String)](), $0.value) }) + labeledCounts {
            let key = name + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
            let counter = cacheCounters[key] ?? {
                let made = CoreMetrics.Counter(label: name, dimensions: labels, factory: factory)
                cacheCounters[key] = made
                return made
            }()
            let delta = value - exported[key, default: 0]
            if delta > 0 { counter.increment(by: delta) }
            exported[key] = value
        }
        for (name, labels, value) in gaugeValues {
            let key = name + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
            let gauge = gauges[key] ?? {
                let made = CoreMetrics.Gauge(label: name, dimensions: labels, factory: factory)
                gauges[key] = made
                return made
            }()
            gauge.record(value)
        }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return MetricsHelp.withHelp(buffer)
    }
}

private func nanoseconds(_ duration: Duration) -> Int64 {
    duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
}
