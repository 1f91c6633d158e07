import FedGateAggregation


/// A plan this broker cannot run as written (refused at submission, before any silo is asked).
public struct PlanUnsupported: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// Why the broker refused an upload: the metric label (`fedgate_updates_rejected_total{reason}`)
/// and the text the silo and the audit record get.
struct UpdateRefused: Error, CustomStringConvertible {
    enum Reason: String, CaseIterable {
        case roundClosed = "round_closed", notParticipant = "not_participant", duplicate, shape, unreadable
        case nonFinite = "non_finite", norm, examples
    }
    let reason: Reason
    let description: String
    /// The poisoning flag the refusal raises: a failed check of the update's content (not a
    /// protocol fault such as a closed round, a duplicate or an unreadable file).
    let flag: AttackFlag?
    init(_ reason: Reason, _ description: String, flag: AttackFlag? = nil) {
        self.reason = reason
        self.description = description
        self.flag = flag
    }

    /// A failed validation check, as the silo and the audit record see it.
    init(_ rejection: UpdateRejection) {
        let reason: Reason = switch rejection.check {
        case .shape: .shape
        case .nonFinite: .nonFinite
        case .norm: .norm
        case .examples: .examples
        case .duplicate: .duplicate
        }
        self.init(reason, rejection.description, flag: AttackFlag(rejection))
    }
}

/// The metrics a silo sends with its update (its held-out accuracy and row count, its training
/// loss, what its own program reported): finite values only, known ones within their range, at
/// most 16 short lower-case names, so a peer cannot put NaN or unbounded text into a report.
enum UploadMetrics {
    static let ranges: [String: ClosedRange<Double>] = ["accuracy": 0...1, "eval_examples": 0...Double(1 << 40)]

    static func checked(_ metrics: [String: Double]) -> [String: Double] {
        let kept = metrics.filter { name, value in
            guard value.isFinite, (1...32).contains(name.utf8.count),
                  name.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }) else { return false }
            return ranges[name]?.contains(value) ?? true
        }
        return Dictionary(uniqueKeysWithValues: kept.sorted { $0.key < $1.key }.prefix(16).map { ($0.key, $0.value) })
    }
}
