/// An accountant consumes DP events and answers (ε, δ) questions about their composition.
public protocol PrivacyAccountant: Sendable {
    /// Adds an event (validated first) to what has been spent.
    mutating func compose(_ event: DPEvent) throws
    /// The smallest ε this accountant can certify for the composed events at δ.
    func epsilon(delta: Double) throws -> Double
    /// The smallest δ this accountant can certify for the composed events at ε.
    func delta(epsilon: Double) throws -> Double
}

/// Which accountant to use; `rdp` is fast and standard, `pld` is tighter.
public enum AccountantKind: String, Sendable, Codable, CaseIterable {
    case rdp
    case pld

    /// A fresh accountant of this kind with default settings.
    public func makeAccountant() -> any PrivacyAccountant {
        switch self {
        case .rdp: return RDPAccountant()
        case .pld: return PLDAccountant()
        }
    }
}

/// ε of an event under the chosen accountant.
public func epsilon(of event: DPEvent, delta: Double, accountant kind: AccountantKind = .rdp) throws -> Double {
    var accountant = kind.makeAccountant()
    try accountant.compose(event)
    return try accountant.epsilon(delta: delta)
}
