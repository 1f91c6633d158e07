import Foundation

/// A consent record of a data set: for which purpose, on what legal basis and scope, and when it
/// holds. A withdrawn or expired consent stops every later use at once.
public struct ConsentRecord: Sendable, Equatable {
    public let id: String
    public let dataset: String
    public let purpose: String
    public let legalBasis: String
    public let scope: String
    public let validFrom: Date
    public let validUntil: Date?
    public var withdrawnAt: Date?

    public init(id: String = UUID().uuidString.lowercased(), dataset: String, purpose: String, legalBasis: String, scope: String,
                validFrom: Date, validUntil: Date? = nil, withdrawnAt: Date? = nil) {
        self.id = id
        self.dataset = dataset
        self.purpose = purpose
        self.legalBasis = legalBasis
        self.scope = scope
        self.validFrom = validFrom
        self.validUntil = validUntil
        self.withdrawnAt = withdrawnAt
    }

    /// Whether it covers `purpose` at `time`.
    public func covers(_ purpose: String, at time: Date) -> Bool {
        self.purpose == purpose && time >= validFrom && (validUntil.map { time < $0 } ?? true) && (withdrawnAt.map { time < $0 } ?? true)
    }
}

/// Purposes a data set's consents cover at a time.
public func consentedPurposes(_ consents: [ConsentRecord], at time: Date) -> Set<String> {
    Set(consents.filter { $0.covers($0.purpose, at: time) }.map(\.purpose))
}
