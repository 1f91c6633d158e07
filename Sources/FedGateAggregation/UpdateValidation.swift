import FedGateTensors

/// Why an update was refused before it could touch the accumulator.
public struct UpdateRejection: Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Check: String, Sendable, Codable { case shape, nonFinite = "non_finite", norm, examples, duplicate }
    public let silo: String
    public let check: Check
    /// The offending value, in words (a length, a norm, a count).
    public let value: String

    public init(silo: String, check: Check, value: String) { (self.silo, self.check, self.value) = (silo, check, value) }

    public var description: String { "update from '\(silo)' refused by the \(check.rawValue) check: \(value)" }
}

/// Checks every incoming update: its length matches the model, it has no NaN or infinity, its norm
/// is within the plan's bound, its example count is plausible, and no silo sends twice.
public struct UpdateValidator: Sendable {
    public let dimension: Int
    /// L2 bound on an update (nil: no bound).
    public let maximumNorm: Double?
    /// Largest example count a silo may claim (its registered data-set size).
    public let maximumExamples: Int

    public init(dimension: Int, maximumNorm: Double? = nil, maximumExamples: Int = 1 << 40) {
        self.dimension = dimension
        self.maximumNorm = maximumNorm
        self.maximumExamples = maximumExamples
    }

    /// Splits updates into the accepted ones and explained rejections.
    public func validate(_ updates: [ClientUpdate]) -> (accepted: [ClientUpdate], rejected: [UpdateRejection]) {
        var accepted: [ClientUpdate] = [], rejected: [UpdateRejection] = []
        var seen = Set<String>()
        for u in updates {
            if !seen.insert(u.silo).inserted { rejected.append(.init(silo: u.silo, check: .duplicate, value: "a second update this round")); continue }
            if let r = check(u) { rejected.append(r) } else { accepted.append(u) }
        }
        return (accepted, rejected)
    }

    /// The first failed check of one update, or nil.
    public func check(_ u: ClientUpdate) -> UpdateRejection? {
        u.delta.withUnsafeBufferPointer { check(silo: u.silo, examples: u.examples, delta: $0) }
    }

    /// The same checks on an update still in its received buffer (no copy).
    public func check(silo: String, examples: Int, delta: UnsafeBufferPointer<Float>) -> UpdateRejection? {
        guard delta.count == dimension else {
            return .init(silo: silo, check: .shape, value: "\(delta.count) values, the model has \(dimension)")
        }
        guard examples >= 1, examples <= maximumExamples else {
            return .init(silo: silo, check: .examples, value: "\(examples) examples (allowed 1…\(maximumExamples))")
        }
        let norm = VectorMath.sumOfSquares(delta).squareRoot()
        guard norm.isFinite else {
            let bad = delta.firstIndex { !$0.isFinite } ?? 0
            return .init(silo: silo, check: .nonFinite, value: "value \(delta[bad]) at index \(bad)")
        }
        if let bound = maximumNorm, norm > bound {
            return .init(silo: silo, check: .norm, value: "L2 norm \(norm) exceeds the bound \(bound)")
        }
        return nil
    }
}

/// Any strategy behind validation: refused updates never reach it and are reported.
public struct Validated<Inner: AggregationStrategy>: AggregationStrategy {
    public var inner: Inner
    public let validator: UpdateValidator
    public var name: String { inner.name }
    public var maximumHeldUpdates: Int? { inner.maximumHeldUpdates }

    public init(_ inner: Inner, validator: UpdateValidator) {
        self.inner = inner
        self.validator = validator
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        let (accepted, rejected) = validator.validate(updates)
        guard !accepted.isEmpty else {
            return AggregationOutcome(parameters: global, rejected: rejected)  // nothing usable: the model stays
        }
        var outcome = try inner.aggregate(global: global, updates: accepted)
        outcome.rejected += rejected
        return outcome
    }
}
