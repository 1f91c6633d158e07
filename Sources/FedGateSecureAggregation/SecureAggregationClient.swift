import Crypto
import FedGatePrivacy
import Foundation

/// A silo's side of one secure-aggregation round (Bonawitz et al. 2017), as a state machine. Each
/// phase checks what the broker relayed before it reveals anything, and refuses on the first
/// inconsistency.
public struct SecureAggregationClient: Sendable {
    public let configuration: SecureAggregationConfiguration
    public let silo: SiloID

    private let identityKey: Curve25519.Signing.PrivateKey
    /// Long-term identity public keys of every participant (from the consortium PKI).
    private var directory: [SiloID: Curve25519.Signing.PublicKey]
    private let encryptionKey = Curve25519.KeyAgreement.PrivateKey()
    private let maskingKey = Curve25519.KeyAgreement.PrivateKey()
    private let selfMaskSeed: [UInt8]
    private let neighbours: Set<SiloID>

    private var advertisements: [SiloID: KeyAdvertisement] = [:]
    private var sharesHeld: [SiloID: (selfMask: ShamirSecretSharing.Share, maskingKey: ShamirSecretSharing.Share)] = [:]
    private var maskedWith: Set<SiloID> = []   // U2 ∩ neighbours: whose pairwise masks are in our input
    private var phase = 0

    public init(configuration: SecureAggregationConfiguration, silo: SiloID,
                identityKey: Curve25519.Signing.PrivateKey, directory: [SiloID: Curve25519.Signing.PublicKey]) throws {
        guard configuration.participants.contains(silo) else {
            throw SecureAggregationError.malformed("silo '\(silo)' is not a participant of round \(configuration.round)")
        }
        self.configuration = configuration
        self.silo = silo
        self.identityKey = identityKey
        self.directory = directory
        var rng = SystemRandomNumberGenerator()
        selfMaskSeed = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        neighbours = configuration.graph[silo] ?? []
    }

    private mutating func enter(_ next: Int, _ name: String) throws {
        guard phase == next - 1 else {
            throw SecureAggregationError.replay(silo: silo, detail: "\(name) requested out of order (phase \(phase))")
        }
        phase = next
    }

    // MARK: phase 0

    /// Our two fresh public keys, signed.
    public mutating func advertiseKeys() throws -> KeyAdvertisement {
        try enter(1, "key advertisement")
        let e = encryptionKey.publicKey.rawRepresentation, m = maskingKey.publicKey.rawRepresentation
        let signature = try identityKey.signature(for: KeyAdvertisement.signedBytes(round: configuration.round, silo: silo, encryptionKey: e, maskingKey: m))
        return KeyAdvertisement(round: configuration.round, silo: silo, encryptionKey: e, maskingKey: m, signature: signature)
    }

    /// The participants' identity keys, when they are learnt after this silo advertised (over a
    /// network, from bindings each peer signed with its certificate). Only before key sharing, and
    /// only a directory that has every participant and this silo's own key.
    public mutating func learnIdentities(_ directory: [SiloID: Curve25519.Signing.PublicKey]) throws {
        guard phase <= 1 else { throw SecureAggregationError.replay(silo: silo, detail: "identities offered after key sharing began") }
        guard Set(directory.keys).isSuperset(of: configuration.participants) else {
            let missing = configuration.participants.filter { directory[$0] == nil }
            throw SecureAggregationError.malformed("the identity directory lacks \(missing.joined(separator: ", "))")
        }
        guard directory[silo]?.rawRepresentation == identityKey.publicKey.rawRepresentation else {
            throw SecureAggregationError.malformed("the identity directory names another key for '\(silo)' itself")
        }
        self.directory = directory
    }

    // MARK: phase 1

    /// Verifies every neighbour's advertisement, then shares our self-mask seed and masking key
    /// among the neighbours that advertised (and ourselves), each share encrypted for its holder.
    public mutating func shareKeys(_ received: [KeyAdvertisement]) throws -> [EncryptedShare] {
        try enter(2, "key sharing")
        var seen: [SiloID: KeyAdvertisement] = [:]
        for ad in received {
            guard ad.round == configuration.round else {
                throw SecureAggregationError.replay(silo: ad.silo, detail: "key advertisement for round \(ad.round), this is round \(configuration.round)")
            }
            guard seen[ad.silo] == nil else { throw SecureAggregationError.replay(silo: ad.silo, detail: "two key advertisements") }
            guard let identity = directory[ad.silo], configuration.participants.contains(ad.silo) else {
                throw SecureAggregationError.malformed("key advertisement from unknown silo '\(ad.silo)'")
            }
            let signed = KeyAdvertisement.signedBytes(round: ad.round, silo: ad.silo, encryptionKey: ad.encryptionKey, maskingKey: ad.maskingKey)
            guard identity.isValidSignature(ad.signature, for: signed) else { throw SecureAggregationError.invalidSignature(silo: ad.silo) }
            seen[ad.silo] = ad
        }
        guard seen[silo] != nil else {
            throw SecureAggregationError.inconsistentView(silo: silo, detail: "our own key advertisement is missing from the broker's list")
        }
        advertisements = seen.filter { neighbours.contains($0.key) || $0.key == silo }
        let holders = advertisements.keys.sorted()
        guard holders.count >= configuration.threshold else {
            throw SecureAggregationError.belowThreshold(phase: "key sharing", survivors: holders.count, threshold: configuration.threshold)
        }
        let shamir = try ShamirSecretSharing(threshold: configuration.threshold)
        let points = holders.map { configuration.point(of: $0)! }
        let selfShares = try shamir.split(selfMaskSeed, for: points)
        let keyShares = try shamir.split(Array(maskingKey.rawRepresentation), for: points)
        var out: [EncryptedShare] = []
        for (i, holder) in holders.enumerated() {
            if holder == silo {
                sharesHeld[silo] = (selfShares[i], keyShares[i])
                continue
            }
            let key = try shareKey(with: advertisements[holder]!, from: silo, to: holder)
            let plaintext = Self.encode(selfShares[i]) + Self.encode(keyShares[i])
            let box = try ChaChaPoly.seal(plaintext, using: key, authenticating: Self.shareAAD(configuration.round, silo, holder))
            out.append(EncryptedShare(round: configuration.round, from: silo, to: holder, ciphertext: box.combined))
        }
        return out
    }

    // MARK: phase 2

    /// Decrypts the shares addressed to us, checks that every silo the broker says shared keys
    /// really sent us a share, and returns our encoded update masked with our self mask and the
    /// pairwise masks of every such neighbour.
    public mutating func maskedInput(encoded: [UInt32], shares: [EncryptedShare], sharedKeys u2: [SiloID]) throws -> MaskedInput {
        try enter(3, "masked input")
        guard encoded.count == configuration.dimension else {
            throw SecureAggregationError.malformed("the encoded update has \(encoded.count) values, the round expects \(configuration.dimension)")
        }
        let survivors = Set(u2)
        guard survivors.contains(silo) else {
            throw SecureAggregationError.inconsistentView(silo: silo, detail: "we shared keys but the broker's list of sharers omits us")
        }
        for s in survivors where s != silo && neighbours.contains(s) && advertisements[s] == nil {
            throw SecureAggregationError.inconsistentView(silo: silo, detail: "'\(s)' is listed as sharing keys but never advertised any")
        }
        var byFrom: [SiloID: EncryptedShare] = [:]
        for share in shares {
            guard share.round == configuration.round else {
                throw SecureAggregationError.replay(silo: share.from, detail: "share for round \(share.round), this is round \(configuration.round)")
            }
            guard share.to == silo else { throw SecureAggregationError.tamperedShare(from: share.from, to: share.to) }
            guard byFrom[share.from] == nil else { throw SecureAggregationError.replay(silo: share.from, detail: "two shares from the same silo") }
            byFrom[share.from] = share
        }
        let expected = survivors.intersection(neighbours)
        for s in expected where byFrom[s] == nil {
            throw SecureAggregationError.inconsistentView(silo: silo, detail: "the broker withheld the share from '\(s)' while listing it as a sharer")
        }
        for (from, share) in byFrom {
            guard expected.contains(from), let ad = advertisements[from] else {
                throw SecureAggregationError.inconsistentView(silo: silo, detail: "a share from '\(from)', who is not a listed neighbour")
            }
            let key = try shareKey(with: ad, from: from, to: silo)
            let plaintext: Data
            do {
                plaintext = try ChaChaPoly.open(ChaChaPoly.SealedBox(combined: share.ciphertext), using: key,
                                                authenticating: Self.shareAAD(configuration.round, from, silo))
            } catch { throw SecureAggregationError.tamperedShare(from: from, to: silo) }
            guard plaintext.count == 2 * Self.shareBytes,
                  let a = Self.decode(plaintext.prefix(Self.shareBytes)), let b = Self.decode(plaintext.suffix(Self.shareBytes)),
                  a.x == configuration.point(of: silo), b.x == a.x else {
                throw SecureAggregationError.tamperedShare(from: from, to: silo)
            }
            sharesHeld[from] = (a, b)
        }
        maskedWith = expected
        var y = encoded
        MaskExpansion.apply(seed: selfMaskSeed, subtract: false, to: &y)
        for v in expected.sorted() {
            let seed = try pairwiseSeed(ownKey: maskingKey, peerKey: advertisements[v]!.maskingKey, a: silo, b: v)
            // The smaller id adds, the larger subtracts: the pair cancels in the sum.
            MaskExpansion.apply(seed: seed, subtract: silo > v, to: &y)
        }
        return MaskedInput(round: configuration.round, silo: silo, values: y)
    }

    // MARK: phase 3

    /// Reveals, for each neighbour we masked with, the share the broker needs: the self-mask seed
    /// share of a survivor, or the masking-key share of a dropped silo. Answers once per round.
    public mutating func unmask(_ request: UnmaskingRequest) throws -> UnmaskingResponse {
        guard request.round == configuration.round else {
            throw SecureAggregationError.replay(silo: silo, detail: "unmasking request for round \(request.round), this is round \(configuration.round)")
        }
        guard phase == 3 else {
            throw SecureAggregationError.inconsistentView(silo: silo, detail: phase > 3
                ? "a second unmasking request: answering twice could reveal both kinds of share for the same silo"
                : "unmasking requested before we sent a masked input")
        }
        phase = 4
        let survivors = Set(request.survivors)
        guard survivors.contains(silo) else {
            throw SecureAggregationError.inconsistentView(silo: silo, detail: "we sent a masked input but are not listed as a survivor")
        }
        let knownSharers = maskedWith.union([silo])
        let strangers = survivors.intersection(neighbours.union([silo])).subtracting(knownSharers)
        guard strangers.isEmpty else {
            throw SecureAggregationError.inconsistentView(silo: silo, detail: "survivors \(strangers.sorted()) never shared keys with us")
        }
        let alive = knownSharers.intersection(survivors)
        guard alive.count >= configuration.threshold else {
            throw SecureAggregationError.belowThreshold(phase: "unmasking", survivors: alive.count, threshold: configuration.threshold)
        }
        var selfShares: [SiloID: ShamirSecretSharing.Share] = [:], keyShares: [SiloID: ShamirSecretSharing.Share] = [:]
        for u in knownSharers {
            guard let held = sharesHeld[u] else { continue }
            if survivors.contains(u) { selfShares[u] = held.selfMask } else { keyShares[u] = held.maskingKey }
        }
        return UnmaskingResponse(round: configuration.round, silo: silo, selfMaskShares: selfShares, maskingKeyShares: keyShares)
    }

    // MARK: keys and encodings

    private func shareKey(with peer: KeyAdvertisement, from: SiloID, to: SiloID) throws -> SymmetricKey {
        let peerKey = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: peer.encryptionKey)
        let secret = try encryptionKey.sharedSecretFromKeyAgreement(with: peerKey)
        return secret.hkdfDerivedSymmetricKey(using: SHA256.self, salt: Data("fedgate-secagg-v1/share".utf8),
                                              sharedInfo: Self.shareAAD(configuration.round, min(from, to), max(from, to)),
                                              outputByteCount: 32)
    }

    static func shareAAD(_ round: UInt64, _ from: SiloID, _ to: SiloID) -> Data {
        var d = Data(withUnsafeBytes(of: round.littleEndian) { Array($0) })
        d.append(contentsOf: Array(from.utf8) + [0] + Array(to.utf8))
        return d
    }

    static let shareBytes = 8 * 6

    static func encode(_ share: ShamirSecretSharing.Share) -> Data {
        var d = Data()
        for v in [share.x] + share.values { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        return d
    }

    static func decode(_ bytes: Data) -> ShamirSecretSharing.Share? {
        let b = Array(bytes)
        guard b.count == shareBytes else { return nil }
        let words = (0..<6).map { i in (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[8 * i + $1]) << (8 * UInt64($1)) } }
        guard words[1...].allSatisfy({ $0 < PrimeField.p }) else { return nil }
        return ShamirSecretSharing.Share(x: words[0], values: Array(words[1...]))
    }
}

/// The pairwise mask seed of silos a and b: HKDF of their X25519 agreement, bound to the pair.
/// Both silos (and the broker, once it has reconstructed a dropped silo's key) derive the same
/// one; the keys are fresh each round, so the seed is too.
func pairwiseSeed(ownKey: Curve25519.KeyAgreement.PrivateKey, peerKey: Data, a: SiloID, b: SiloID) throws -> [UInt8] {
    let secret = try ownKey.sharedSecretFromKeyAgreement(with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: peerKey))
    let key = secret.hkdfDerivedSymmetricKey(using: SHA256.self, salt: Data("fedgate-secagg-v1/mask".utf8),
                                             sharedInfo: Data((min(a, b) + "\u{0}" + max(a, b)).utf8), outputByteCount: 32)
    return key.withUnsafeBytes { Array($0) }
}
