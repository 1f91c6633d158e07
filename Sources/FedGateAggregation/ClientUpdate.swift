/// One silo's contribution to a round: its update (local parameters minus the global ones, as
/// one flat vector) and the number of examples behind it.
public struct ClientUpdate: Sendable, Equatable {
    public let silo: String
    public var delta: [Float]
    public let examples: Int

    public init(silo: String, delta: [Float], examples: Int) {
        self.silo = silo
        self.delta = delta
        self.examples = examples
    }
}

/// What a round's aggregation produced, and what it left out and why.
public struct AggregationOutcome: Sendable, Equatable {
    /// The new global parameters.
    public var parameters: [Float]
    /// Silos whose updates a robust rule excluded this round.
    public var excluded: [String] = []
    /// Updates refused before aggregation (validation), with the reason.
    public var rejected: [UpdateRejection] = []

    public init(parameters: [Float], excluded: [String] = [], rejected: [UpdateRejection] = []) {
        self.parameters = parameters
        self.excluded = excluded
        self.rejected = rejected
    }
}

/// A strategy's refusal to aggregate, naming what to fix.
public struct AggregationError: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
