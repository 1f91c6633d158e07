/// One round of one plan: what a gateway keys its reservations, training and secure sessions by.
/// Printed as `plan/round` in logs.
public struct RoundKey: Sendable, Hashable, CustomStringConvertible {
    public let plan: String
    public let round: UInt32

    public init(_ plan: String, _ round: UInt32) {
        self.plan = plan
        self.round = round
    }

    public var description: String { "\(plan)/\(round)" }
}
