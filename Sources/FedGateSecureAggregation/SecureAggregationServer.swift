import Crypto
import Foundation

/// The broker's side of a secure-aggregation round: it relays keys and shares, folds masked inputs
/// into one running sum as they arrive (memory O(d), not O(silos × d)), and at the end removes the
/// masks it can reconstruct. It never holds a single silo's unmasked update.
public struct SecureAggregationServer: Sendable {
    public let configuration: SecureAggregationConfiguration
    private let graph: [SiloID: Set<SiloID>]

    private var advertisements: [SiloID: KeyAdvertisement] = [:]
    private var sharesFrom: [SiloID: [EncryptedShare]] = [:]
    private var sum: [UInt32]
    private var maskedFrom: Set<SiloID> = []
    private var unmaskRequest: UnmaskingRequest?

    public init(configuration: SecureAggregationConfiguration) {
        self.configuration = configuration
        graph = configuration.graph
        sum = Array(repeating: 0, count: configuration.dimension)
    }

    private func check(_ round: UInt64, _ silo: SiloID) throws {
        guard round == configuration.round else {
            throw SecureAggregationError.replay(silo: silo, detail: "message for round \(round), this is round \(configuration.round)")
        }
        guard configuration.participants.contains(silo) else {
            throw SecureAggregationError.malformed("message from '\(silo)', who is not a participant")
        }
    }

    // MARK: phase 0

    /// Records a key advertisement (the broker cannot verify it usefully; the silos do).
    public mutating func receive(_ ad: KeyAdvertisement) throws {
        try check(ad.round, ad.silo)
        guard advertisements[ad.silo] == nil else { throw SecureAggregationError.replay(silo: ad.silo, detail: "second key advertisement") }
        advertisements[ad.silo] = ad
    }

    /// What to relay to `silo`: the advertisements of its neighbours and its own.
    public func advertisements(for silo: SiloID) throws -> [KeyAdvertisement] {
        guard advertisements.count >= configuration.threshold else {
            throw SecureAggregationError.belowThreshold(phase: "key advertisement", survivors: advertisements.count, threshold: configuration.threshold)
        }
        let wanted = (graph[silo] ?? []).union([silo])
        return advertisements.values.filter { wanted.contains($0.silo) }.sorted { $0.silo < $1.silo }
    }

    // MARK: phase 1

    public mutating func receive(shares: [EncryptedShare], from silo: SiloID) throws {
        guard sharesFrom[silo] == nil else { throw SecureAggregationError.replay(silo: silo, detail: "second batch of shares") }
        for s in shares {
            try check(s.round, s.from)
            guard s.from == silo else { throw SecureAggregationError.malformed("'\(silo)' sent a share claiming to be from '\(s.from)'") }
        }
        sharesFrom[silo] = shares
    }

    /// The silos that shared keys (U2).
    public var sharers: [SiloID] { sharesFrom.keys.sorted() }

    /// What to relay to `silo`: the shares addressed to it, and the list of sharers.
    public func shares(for silo: SiloID) throws -> (shares: [EncryptedShare], sharers: [SiloID]) {
        guard sharesFrom.count >= configuration.threshold else {
            throw SecureAggregationError.belowThreshold(phase: "key sharing", survivors: sharesFrom.count, threshold: configuration.threshold)
        }
        return (sharesFrom.values.flatMap { $0 }.filter { $0.to == silo }, sharers)
    }

    // MARK: phase 2

    /// Folds a masked input into the running sum.
    public mutating func receive(_ input: MaskedInput) throws {
        try check(input.round, input.silo)
        guard sharesFrom[input.silo] != nil else {
            throw SecureAggregationError.malformed("masked input from '\(input.silo)', who did not share keys")
        }
        guard !maskedFrom.contains(input.silo) else { throw SecureAggregationError.replay(silo: input.silo, detail: "second masked input") }
        guard input.values.count == configuration.dimension else {
            throw SecureAggregationError.malformed("masked input from '\(input.silo)' has \(input.values.count) values, expected \(configuration.dimension)")
        }
        sum.withUnsafeMutableBufferPointer { s in
            input.values.withUnsafeBufferPointer { v in
                for i in 0..<s.count { s[i] &+= v[i] }
            }
        }
        maskedFrom.insert(input.silo)
    }

    /// The request every survivor gets: the same list for all.
    public mutating func unmaskingRequest() throws -> UnmaskingRequest {
        guard maskedFrom.count >= configuration.threshold else {
            throw SecureAggregationError.belowThreshold(phase: "masked input", survivors: maskedFrom.count, threshold: configuration.threshold)
        }
        let request = UnmaskingRequest(round: configuration.round, survivors: maskedFrom.sorted())
        unmaskRequest = request
        return request
    }

    // MARK: phase 3

    /// Reconstructs survivors' self-mask seeds and dropped silos' masking keys from the responses,
    /// removes their masks and returns the sum of the survivors' encoded updates mod 2³².
    public func unmask(_ responses: [UnmaskingResponse]) throws -> (sum: [UInt32], survivors: [SiloID]) {
        guard let request = unmaskRequest else { throw SecureAggregationError.malformed("unmasking before the request was sent") }
        var seen = Set<SiloID>()
        for r in responses {
            try check(r.round, r.silo)
            guard seen.insert(r.silo).inserted else { throw SecureAggregationError.replay(silo: r.silo, detail: "second unmasking response") }
        }
        guard responses.count >= configuration.threshold else {
            throw SecureAggregationError.belowThreshold(phase: "unmasking", survivors: responses.count, threshold: configuration.threshold)
        }
        let shamir = try ShamirSecretSharing(threshold: configuration.threshold)
        let survivors = Set(request.survivors)
        let dropped = Set(sharers).subtracting(survivors)
        var result = sum

        for u in survivors.sorted() {
            let shares = responses.compactMap { $0.selfMaskShares[u] }
            guard shares.count >= configuration.threshold else {
                throw SecureAggregationError.belowThreshold(phase: "unmasking the self mask of '\(u)'", survivors: shares.count, threshold: configuration.threshold)
            }
            MaskExpansion.apply(seed: try shamir.reconstruct(shares), subtract: true, to: &result)
        }
        for u in dropped.sorted() {
            // Survivors who masked with u added (u > v) or subtracted (u < v) PRG(s_uv): undo it.
            let partners = (graph[u] ?? []).intersection(survivors)
            if partners.isEmpty { continue }
            let shares = responses.compactMap { $0.maskingKeyShares[u] }
            guard shares.count >= configuration.threshold else {
                throw SecureAggregationError.belowThreshold(phase: "unmasking the pairwise masks of dropped '\(u)'", survivors: shares.count, threshold: configuration.threshold)
            }
            let key = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: try shamir.reconstruct(shares))
            for v in partners.sorted() {
                guard let peer = advertisements[v] else { continue }
                let seed = try pairwiseSeed(ownKey: key, peerKey: peer.maskingKey, a: u, b: v)
                MaskExpansion.apply(seed: seed, subtract: v < u, to: &result)
            }
        }
        return (result, request.survivors)
    }
}
