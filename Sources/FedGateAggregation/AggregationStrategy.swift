/// The broker's rule for turning a round's updates into the next global model (after Flower's
/// `Strategy`). Strategies keep server state (momentum, control variates) between rounds.
///
/// FedAvg-like strategies fold updates into one accumulator as they arrive (memory O(model));
/// robust strategies need every update at once and say how many they will hold.
public protocol AggregationStrategy: Sendable {
    /// A short name for reports.
    var name: String { get }
    /// The most updates the strategy holds in memory at once; nil when it streams.
    var maximumHeldUpdates: Int? { get }
    /// Aggregates one round's (already validated) updates into new global parameters.
    mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome
}

extension AggregationStrategy {
    public var maximumHeldUpdates: Int? { nil }
}

/// Checks shared by strategies.
enum AggregationChecks {
    static func nonEmpty(_ updates: [ClientUpdate], _ strategy: String) throws {
        guard !updates.isEmpty else { throw AggregationError("\(strategy): no updates to aggregate this round") }
    }

    static func held(_ updates: [ClientUpdate], limit: Int?, _ strategy: String) throws {
        if let limit, updates.count > limit {
            throw AggregationError("\(strategy) holds at most \(limit) updates in memory, got \(updates.count); raise its limit or sample fewer silos")
        }
    }
}
