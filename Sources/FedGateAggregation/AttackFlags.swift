/// A poisoning flag: a silo's update that a round did not use because it looked like an attack.
/// Robust aggregators exclude updates far from the others (Multi-Krum, Krum, Bulyan); validation
/// refuses updates that are malformed or too large. Each is evidence, not proof: an honest silo
/// with unusual data can be excluded too, which is why one flag is recorded and only a silo
/// flagged round after round raises an alert.
public struct AttackFlag: Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// A robust aggregator left the update out.
        case excluded
        /// Validation refused the update (its norm, non-finite values, shape or example count).
        case refused
    }

    public var silo: String
    public var kind: Kind
    /// Why, in words: the strategy that left it out, or the check that refused it and the value.
    public var reason: String

    public init(silo: String, kind: Kind, reason: String) {
        (self.silo, self.kind, self.reason) = (silo, kind, reason)
    }

    /// The flag for an update validation refused. Only the checks of an update's content flag a
    /// silo; a duplicate is a protocol fault, not a poisoning sign.
    public init?(_ rejection: UpdateRejection) {
        guard rejection.check != .duplicate else { return nil }
        self.init(silo: rejection.silo, kind: .refused, reason: "\(rejection.check.rawValue) check: \(rejection.value)")
    }

    /// A round's flags from its aggregation: the silos the strategy excluded and the updates it refused.
    public static func of(_ outcome: AggregationOutcome, strategy: String) -> [AttackFlag] {
        outcome.excluded.sorted().map { AttackFlag(silo: $0, kind: .excluded, reason: "left out by \(strategy)") }
            + outcome.rejected.compactMap(AttackFlag.init)
    }

    public var description: String { "\(silo) \(kind.rawValue): \(reason)" }
}

/// A plan's flags over its rounds: a silo flagged in `alertAfter` distinct rounds raises one alert.
/// Pure and replayable: a restarted broker rebuilds it from the flags it audited.
public struct AttackWatch: Sendable, Equatable {
    /// Flagged rounds that make an alert.
    public let alertAfter: Int
    /// The rounds each silo was flagged in.
    public private(set) var rounds: [String: Set<Int>] = [:]
    /// Silos that raised their alert.
    public private(set) var alerted: Set<String> = []

    public init(alertAfter: Int) {
        precondition(alertAfter >= 1, "an alert needs at least one flagged round")
        self.alertAfter = alertAfter
    }

    /// Notes a round's flags; the silos whose alert this round raises (each silo once per plan),
    /// with every round they were flagged in, in order.
    public mutating func record(round: Int, _ flags: [AttackFlag]) -> [(silo: String, rounds: [Int])] {
        var raised: [(silo: String, rounds: [Int])] = []
        for silo in Set(flags.map(\.silo)).sorted() {
            rounds[silo, default: []].insert(round)
            if rounds[silo]!.count >= alertAfter, !alerted.contains(silo) {
                alerted.insert(silo)
                raised.append((silo, rounds[silo]!.sorted()))
            }
        }
        return raised
    }
}
