/// How many new connections an address may open: a token bucket per source address (`burst`
/// connections at once, then `perSecond`). A connection over the limit is closed before its TLS
/// handshake starts, so a peer opening connections as fast as it can spends little of the broker's
/// CPU. The sources tracked are bounded: past `maximumSources`, the fullest buckets (sources quiet
/// long enough to be back at the burst) are forgotten first.
public struct HandshakeRateLimit: Sendable {
    public var perSecond: Double
    public var burst: Double
    public var maximumSources: Int

    private var buckets: [String: (tokens: Double, at: ContinuousClock.Instant)] = [:]

    public init(perSecond: Double = 20, burst: Int = 200, maximumSources: Int = 10_000) {
        (self.perSecond, self.burst, self.maximumSources) = (perSecond, Double(burst), maximumSources)
    }

    /// No limit at all.
    public static let unlimited = HandshakeRateLimit(perSecond: .infinity, burst: Int.max)

    /// Whether `source` may open a connection at `now` (it spends a token if so).
    public mutating func admit(_ source: String, at now: ContinuousClock.Instant) -> Bool {
        guard perSecond.isFinite else { return true }
        var bucket = buckets[source] ?? (burst, now)
        bucket = (min(burst, bucket.tokens + max(0, (now - bucket.at).seconds) * perSecond), now)
        let admitted = bucket.tokens >= 1
        if admitted { bucket.tokens -= 1 }
        buckets[source] = bucket
        if buckets.count > maximumSources { forgetQuietSources(now) }
        return admitted
    }

    /// Drops the sources whose buckets have refilled (they would be admitted as new), then, if still
    /// too many, the fullest half.
    private mutating func forgetQuietSources(_ now: ContinuousClock.Instant) {
        buckets = buckets.filter { _, b in b.tokens + (now - b.at).seconds * perSecond < burst }
        if buckets.count > maximumSources {
            let keep = buckets.sorted { $0.value.tokens < $1.value.tokens }.prefix(maximumSources / 2)
            buckets = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
    }

    /// How many sources are tracked now.
    public var trackedSources: Int { buckets.count }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
