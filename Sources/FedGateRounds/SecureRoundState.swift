import Foundation
import FedGateSecureAggregation

/// The broker's side of one secure-aggregation round as a value: where the protocol stands, what
/// each silo has sent, who is gone. The broker relays keys and shares and folds masked inputs; it
/// never holds a single silo's update in the clear. No I/O: the broker decodes each step, hands it
/// here, and sends what the phase's close returns. Its phases, each ended by every live participant
/// having sent its part or by the round's deadline:
///
///     advertising ──closeAdvertising──▶ sharing ──closeSharing──▶ masking ──closeMasking──▶ consistency
///         ──closeConsistency──▶ unmasking ──unmask
///
/// In the consistency phase each survivor signs the survivor list it was told; the unmasking
/// request carries the signatures, and a silo unmasks only a list it signed and enough others did.
///
/// `Binding` is what ties a silo's round key to its certificate (checked by the silos, not here).
public struct SecureRoundState<Binding: Sendable>: Sendable {
    public enum Phase: String, Sendable, CaseIterable { case advertising, sharing, masking, consistency, unmasking }

    public let participants: [String]
    public private(set) var server: SecureAggregationServer
    public private(set) var phase = Phase.advertising
    public private(set) var bindings: [String: Binding] = [:]
    public private(set) var shared: Set<String> = []
    public private(set) var request: UnmaskingRequest?
    /// The survivor list being signed, and the signatures so far.
    public private(set) var check: ConsistencyCheck?
    public private(set) var signatures: [String: Data] = [:]
    public private(set) var responses: [String: UnmaskingResponse] = [:]
    public private(set) var gone: Set<String> = []

    public init(configuration: SecureAggregationConfiguration) {
        participants = configuration.participants
        server = SecureAggregationServer(configuration: configuration)
    }

    public var round: UInt64 { server.configuration.round }
    public var alive: Set<String> { Set(participants).subtracting(gone) }

    /// A silo's key advertisement with its binding, while keys are advertised; both must name the silo.
    public mutating func advertise(_ advertisement: KeyAdvertisement, binding: Binding, bindingSilo: String, from silo: String) throws {
        try expect(.advertising, "advertise", from: silo)
        guard advertisement.silo == silo, bindingSilo == silo else {
            throw SecureAggregationError.malformed("\(silo) advertised keys as '\(advertisement.silo == silo ? bindingSilo : advertisement.silo)'")
        }
        try server.receive(advertisement)
        bindings[silo] = binding
    }

    /// A silo's encrypted shares, while keys are shared; each must come from the silo itself.
    public mutating func share(_ shares: [EncryptedShare], from silo: String) throws {
        try expect(.sharing, "shares", from: silo)
        guard shares.allSatisfy({ $0.from == silo }) else { throw SecureAggregationError.malformed("\(silo) sent shares as another silo") }
        try server.receive(shares: shares, from: silo)
        shared.insert(silo)
    }

    /// A silo's masked input (an upload), folded into the running sum while inputs are masked.
    public mutating func receiveMasked(_ values: [UInt32], from silo: String) throws {
        try expect(.masking, "masked input", from: silo)
        try server.receive(MaskedInput(round: round, silo: silo, values: values))
    }

    /// A survivor's answer to the unmasking request; it must answer as itself.
    public mutating func answer(_ response: UnmaskingResponse, from silo: String) throws {
        try expect(.unmasking, "unmasked", from: silo)
        guard response.silo == silo else { throw SecureAggregationError.malformed("\(silo) answered the unmasking as '\(response.silo)'") }
        guard request?.survivors.contains(silo) == true else { throw SecureAggregationError.malformed("\(silo) is not asked to unmask") }
        guard responses[silo] == nil else { throw SecureAggregationError.replay(silo: silo, detail: "second unmasking response") }
        responses[silo] = response
    }

    /// A survivor's signature of the survivor list; it must sign as itself. (Whether it signed the
    /// list is for the other silos to check: the broker is the party the check is against.)
    public mutating func sign(_ signature: ConsistencySignature, from silo: String) throws {
        try expect(.consistency, "signed", from: silo)
        guard signature.silo == silo, signature.round == round else { throw SecureAggregationError.malformed("\(silo) signed as '\(signature.silo)' or for another round") }
        guard check?.survivors.contains(silo) == true else { throw SecureAggregationError.malformed("\(silo) is not a survivor") }
        guard signatures[silo] == nil else { throw SecureAggregationError.replay(silo: silo, detail: "second signature of the survivor list") }
        signatures[silo] = signature.signature
    }

    /// A participant's stream ended: it is no longer waited for (what it sent stays).
    public mutating func drop(_ silo: String) {
        if participants.contains(silo) { gone.insert(silo) }
    }

    /// Whether every live participant has sent its part of the current phase. During masking the
    /// uploads are the round's (`everyoneUploaded` from its progress).
    public func isPhaseComplete(everyoneUploaded: Bool) -> Bool {
        switch phase {
        case .advertising: alive.isSubset(of: Set(bindings.keys))
        case .sharing: alive.intersection(bindings.keys).isSubset(of: shared)
        case .masking: everyoneUploaded
        case .consistency: alive.intersection(check?.survivors ?? []).isSubset(of: Set(signatures.keys))
        case .unmasking: alive.intersection(request?.survivors ?? []).isSubset(of: Set(responses.keys))
        }
    }

    /// Ends key advertisement: for each live silo that advertised, its neighbours' advertisements,
    /// with every binding (in silo order). Throws below the threshold.
    public mutating func closeAdvertising() throws -> (keys: [(silo: String, advertisements: [KeyAdvertisement])], bindings: [Binding]) {
        try expectPhase(.advertising)
        let order = bindings.keys.sorted()
        let keys = try order.filter(alive.contains).map { ($0, try server.advertisements(for: $0)) }
        phase = .sharing
        return (keys, order.map { bindings[$0]! })
    }

    /// Ends key sharing: for each live silo that shared, the shares addressed to it and the list of
    /// sharers. Throws below the threshold.
    public mutating func closeSharing() throws -> [(silo: String, shares: [EncryptedShare], sharers: [String])] {
        try expectPhase(.sharing)
        let relays = try shared.sorted().filter(alive.contains).map { silo in
            let relay = try server.shares(for: silo)
            return (silo, relay.shares, relay.sharers)
        }
        phase = .masking
        return relays
    }

    /// Ends masking: the survivor list to sign and the live survivors to send it to. Throws below the threshold.
    public mutating func closeMasking() throws -> (check: ConsistencyCheck, to: [String]) {
        try expectPhase(.masking)
        let survivors = try server.unmaskingRequest().survivors
        let check = ConsistencyCheck(round: round, survivors: survivors)
        self.check = check
        phase = .consistency
        return (check, check.survivors.filter(alive.contains))
    }

    /// Ends the consistency check: the unmasking request with the survivors' signatures, and the live
    /// survivors to send it to. Throws when fewer than the threshold signed.
    public mutating func closeConsistency() throws -> (request: UnmaskingRequest, to: [String]) {
        try expectPhase(.consistency)
        guard let check, signatures.count >= server.configuration.threshold else {
            throw SecureAggregationError.belowThreshold(phase: "consistency check", survivors: signatures.count, threshold: server.configuration.threshold)
        }
        let request = UnmaskingRequest(round: round, survivors: check.survivors, signatures: signatures)
        self.request = request
        phase = .unmasking
        return (request, check.survivors.filter { alive.contains($0) && signatures[$0] != nil })
    }

    /// The survivors' sum of encoded updates mod 2³², once enough answered the unmasking.
    public func unmask() throws -> (sum: [UInt32], survivors: [String]) {
        try expectPhase(.unmasking)
        return try server.unmask(responses.keys.sorted().map { responses[$0]! })
    }

    private func expect(_ wanted: Phase, _ step: String, from silo: String) throws {
        guard alive.contains(silo) else { throw SecureAggregationError.malformed("a '\(step)' step from \(silo), who is not a live participant") }
        guard phase == wanted else { throw SecureAggregationError.malformed("a '\(step)' step out of order (the round is \(phase.rawValue))") }
    }

    private func expectPhase(_ wanted: Phase) throws {
        guard phase == wanted else { throw SecureAggregationError.malformed("closing \(wanted.rawValue) while the round is \(phase.rawValue)") }
    }
}
