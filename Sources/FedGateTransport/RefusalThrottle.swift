import Synchronization

/// Keeps refusals from flooding the audit trail and the log: the first refusal of a kind from a
/// source in an interval is reported at once; the ones like it after it, until the interval ends,
/// are only counted, and reported as one record with their count when it does. A source gets at
/// most `kindsPerSource` kinds an interval (past that its refusals share one kind), so a peer that
/// varies what it sends (a new certificate name each time) still writes a bounded number of
/// records: at most `kindsPerSource + 1` per source per interval.
public final class RefusalThrottle<Sample: Sendable>: Sendable {
    /// A report: the refusal to record and how many refusals it stands for.
    public struct Report: Sendable {
        public let sample: Sample
        public let count: Int
    }

    private struct Pending {
        var sample: Sample
        var suppressed: Int
        let opened: ContinuousClock.Instant
    }

    private struct State {
        var windows: [String: [String: Pending]] = [:]
    }

    private let interval: Duration
    private let kindsPerSource: Int
    private let state = Mutex(State())

    public init(interval: Duration = .seconds(60), kindsPerSource: Int = 16) {
        self.interval = interval
        self.kindsPerSource = kindsPerSource
    }

    /// The refusal `sample` of `kind` from `source` at `now`: a report to make now, or nil (counted,
    /// reported when its interval ends).
    public func admit(_ sample: Sample, source: String, kind: String, now: ContinuousClock.Instant = .now) -> Report? {
        state.withLock { s -> Report? in
            var window = s.windows[source, default: [:]]
            defer { s.windows[source] = window }
            let key = window[kind] != nil || window.count < kindsPerSource ? kind : "(other kinds)"
            if var pending = window[key], now - pending.opened < interval {
                pending.sample = sample
                pending.suppressed += 1
                window[key] = pending
                return nil
            }
            // A new interval for this kind: what the last one counted is reported with this one.
            let carried = window[key]?.suppressed ?? 0
            window[key] = Pending(sample: sample, suppressed: 0, opened: now)
            return Report(sample: sample, count: 1 + carried)
        }
    }

    /// The counts of intervals that have ended, to report (one record each), and forgets them.
    public func drain(now: ContinuousClock.Instant = .now) -> [Report] {
        state.withLock { s in
            var out: [Report] = []
            for (source, window) in s.windows {
                var kept = window
                for (kind, pending) in window where now - pending.opened >= interval {
                    if pending.suppressed > 0 { out.append(Report(sample: pending.sample, count: pending.suppressed)) }
                    kept.removeValue(forKey: kind)
                }
                s.windows[source] = kept.isEmpty ? nil : kept
            }
            return out
        }
    }
}
