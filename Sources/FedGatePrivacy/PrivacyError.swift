/// A privacy computation refused its input; the message names the field and what to do.
public struct PrivacyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The parameter or event field at fault, for example `poisson_sampled.sampling_probability`.
    public let field: String
    /// What is wrong and what would be accepted.
    public let reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "\(field): \(reason)" }
}

extension PrivacyError {
    /// Throws a `PrivacyError` for `field` unless `condition` holds.
    public static func require(_ condition: Bool, _ field: String, _ reason: @autoclosure () -> String) throws {
        if !condition { throw PrivacyError(field: field, reason: reason()) }
    }

    /// δ must lie strictly between 0 and 1.
    static func checkDelta(_ delta: Double, field: String = "delta") throws {
        try require(delta.isFinite && delta > 0 && delta < 1, field,
                    "must be a number strictly between 0 and 1 (for example 1e-5), got \(delta)")
    }

    /// ε must be finite and non-negative.
    static func checkEpsilon(_ epsilon: Double, field: String = "epsilon") throws {
        try require(epsilon.isFinite && epsilon >= 0, field,
                    "must be a finite number ≥ 0, got \(epsilon)")
    }
}
