import Crypto
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import FedGateTransport

/// This silo's side of one secure-aggregation round, as a value: its keys, the shares it made, the
/// broker's relay, its update, and the masked input made once from both. Each step is a mutating
/// call with no I/O and no await (the gateway changes the session in place in its dictionary, so
/// a training task setting the update and a relay arriving never lose each other's writes).
struct SecureSession: Sendable {
    let setup: Fedgate_V1_SecAggSetup
    /// The key this silo signs its round keys with, bound to its certificate by the gateway.
    let identityKey: Curve25519.Signing.PrivateKey
    private var client: SecureAggregationClient
    /// The clipped local update, once trained (set by the training task).
    var update: (delta: [Float], header: TransferHeader)?
    private(set) var relay: SecAggRelay?
    private(set) var masked = false
    /// The peers' identity keys the gateway verified against the CA, and the survivor list this silo signed.
    private(set) var peers: [SiloID: Curve25519.Signing.PublicKey] = [:]
    private(set) var signed: ConsistencyCheck?

    /// What this silo's policy asks of a secure round: the least threshold and the least number of
    /// survivors whose sum it helps unmask (nil: whatever the protocol allows).
    struct Minimums: Sendable, Equatable {
        var threshold: Int?
        var survivors: Int?
        static let none = Minimums()
    }

    /// A secure round this silo will not take part in further, with the policy's reason.
    struct BelowMinimum: Error, Sendable, CustomStringConvertible {
        let description: String
    }

    let minimums: Minimums

    /// Fresh keys for the round: the session, and the advertisement of its round keys. Refused
    /// (`BelowMinimum`) when the round's threshold is below the policy's least.
    static func begin(_ setup: Fedgate_V1_SecAggSetup, silo: SiloID, dimension: Int, minimums: Minimums = .none) throws -> (SecureSession, KeyAdvertisement) {
        if let least = minimums.threshold, Int(setup.threshold) < least {
            throw BelowMinimum(description: "the round's threshold is \(setup.threshold) of \(setup.participants.count) silos; this silo's policy asks at least \(least)")
        }
        let configuration = try SecureAggregationConfiguration(round: setup.id, participants: setup.participants,
                                                               threshold: Int(setup.threshold), dimension: dimension)
        let identityKey = Curve25519.Signing.PrivateKey()
        var client = try SecureAggregationClient(configuration: configuration, silo: silo, identityKey: identityKey,
                                                 directory: [silo: identityKey.publicKey])
        let advertisement = try client.advertiseKeys()
        return (SecureSession(setup: setup, identityKey: identityKey, client: client, minimums: minimums), advertisement)
    }

    /// The peers' round keys, with the identity keys the gateway verified against the CA: the
    /// encrypted shares of this silo's secrets for them. A participant that did not advertise is
    /// given a key no one holds (the protocol treats it as dropped; there is nothing to check).
    mutating func share(_ advertisements: [KeyAdvertisement], verified: [SiloID: Curve25519.Signing.PublicKey]) throws -> [EncryptedShare] {
        var directory = verified.filter { setup.participants.contains($0.key) }
        for silo in setup.participants where directory[silo] == nil {
            directory[silo] = Curve25519.Signing.PrivateKey().publicKey
        }
        try client.learnIdentities(directory)
        peers = verified.filter { setup.participants.contains($0.key) }
        peers[client.silo] = identityKey.publicKey
        return try client.shareKeys(advertisements)
    }

    /// The shares the broker relays to this silo from its peers.
    mutating func received(_ relay: SecAggRelay) { self.relay = relay }

    /// Once both the update and the relay are here, once: the update encoded in fixed point with
    /// this silo's share of the distributed discrete-Gaussian noise (drawn from ChaCha20 seeded by
    /// the system), then masked. Nil until both are here, and after the first time.
    mutating func maskIfReady() throws -> (input: MaskedInput, header: TransferHeader)? {
        guard let (delta, header) = update, let relay, !masked else { return nil }
        masked = true
        let noise = try DistributedNoise(clipNorm: setup.clipNorm, silos: setup.participants.count, honestSilos: Int(setup.honestSilos),
                                         noiseMultiplier: setup.noiseMultiplier)
        var rng = ChaCha20Random()
        var encoded = try noise.codec.encode(delta, using: &rng)
        noise.addNoise(to: &encoded, using: &rng)
        return (try client.maskedInput(encoded: encoded, shares: relay.shares, sharedKeys: relay.sharers), header)
    }

    /// The broker's unmasking request: this silo's shares of the survivors' and the dropped silos'
    /// secrets. Refused (`BelowMinimum`) when fewer survivors remain than the policy's least: their
    /// sum would say too much about each of them.
    mutating func unmask(_ request: UnmaskingRequest) throws -> UnmaskingResponse {
        if let least = minimums.survivors, request.survivors.count < least {
            throw BelowMinimum(description: "\(request.survivors.count) silos survived the round; this silo's policy helps unmask the sum of at least \(least)")
        }
        // Only the list this silo signed, signed by enough survivors, every signature valid.
        guard let signed else { throw SecureAggregationError.inconsistentView(silo: client.silo, detail: "asked to unmask before signing a survivor list") }
        try signed.check(request, keys: peers, threshold: Int(setup.threshold), silo: client.silo)
        return try client.unmask(request)
    }

    /// The broker's survivor list: signed with this silo's identity key, once per round.
    mutating func sign(_ check: ConsistencyCheck) throws -> ConsistencySignature {
        guard check.round == setup.id, signed == nil, check.survivors.contains(client.silo) else {
            throw SecureAggregationError.inconsistentView(silo: client.silo, detail: "a survivor list for another round, a second one, or one without this silo")
        }
        signed = check
        return try check.sign(as: client.silo, with: identityKey)
    }
}
