import Foundation
import Crypto

/// A silo's identity in a round: its position in the sorted participant list gives its Shamir
/// evaluation point (index + 1).
public typealias SiloID = String

/// Phase 0, silo → broker → every neighbour: the silo's two fresh public keys, signed with its
/// long-term identity key so the broker cannot substitute them.
public struct KeyAdvertisement: Sendable, Equatable, Codable {
    public let round: UInt64
    public let silo: SiloID
    /// X25519 key for encrypting shares to this silo.
    public let encryptionKey: Data
    /// X25519 key for agreeing pairwise masks.
    public let maskingKey: Data
    /// Ed25519 signature over the fields above.
    public let signature: Data

    static func signedBytes(round: UInt64, silo: SiloID, encryptionKey: Data, maskingKey: Data) -> Data {
        var d = Data("fedgate-secagg-v1/advertise".utf8)
        d.append(contentsOf: withUnsafeBytes(of: round.littleEndian) { Array($0) })
        d.append(contentsOf: Array(silo.utf8) + [0])
        d.append(encryptionKey)
        d.append(maskingKey)
        return d
    }

    public var wireSize: Int { 8 + silo.utf8.count + encryptionKey.count + maskingKey.count + signature.count }
}

/// Phase 1, silo → broker → one recipient: the sender's Shamir shares of its self-mask seed and of
/// its masking private key, encrypted for the recipient (ChaCha20-Poly1305).
public struct EncryptedShare: Sendable, Equatable, Codable {
    public let round: UInt64
    public let from: SiloID
    public let to: SiloID
    public let ciphertext: Data

    public var wireSize: Int { 8 + from.utf8.count + to.utf8.count + ciphertext.count }
}

/// Phase 2, silo → broker: the masked, encoded update.
public struct MaskedInput: Sendable, Equatable, Codable {
    public let round: UInt64
    public let silo: SiloID
    public let values: [UInt32]

    public init(round: UInt64, silo: SiloID, values: [UInt32]) {
        self.round = round
        self.silo = silo
        self.values = values
    }

    public var wireSize: Int { 8 + silo.utf8.count + 4 * values.count }
}

/// Phase 3, broker → each survivor: who sent a masked input. Everyone else who shared keys dropped.
/// With the consistency check, the survivors' signatures of this same list come with it.
public struct UnmaskingRequest: Sendable, Equatable, Codable {
    public let round: UInt64
    public let survivors: [SiloID]
    /// Each survivor's signature of (round, survivors) with its identity key (`ConsistencyCheck`).
    public var signatures: [SiloID: Data]? = nil

    public init(round: UInt64, survivors: [SiloID], signatures: [SiloID: Data]? = nil) {
        (self.round, self.survivors, self.signatures) = (round, survivors, signatures)
    }

    public var wireSize: Int { 8 + survivors.reduce(0) { $0 + $1.utf8.count + 1 } + (signatures?.count ?? 0) * 64 }
}

/// Phase 2½, the consistency check (Bonawitz et al. 2017, round 3): the broker tells each survivor
/// who survived, each signs that list with its identity key, and the unmasking request carries the
/// signatures. A silo unmasks only a list it signed itself and at least `threshold` survivors signed
/// with it, every signature valid: a broker cannot tell two silos different survivor lists (to get one
/// silo's self-mask share from one and its masking-key share from another) without being caught.
public struct ConsistencyCheck: Sendable, Equatable, Codable {
    public let round: UInt64
    public let survivors: [SiloID]
    public init(round: UInt64, survivors: [SiloID]) { (self.round, self.survivors) = (round, survivors.sorted()) }

    /// The bytes signed: the protocol's name, the round and the sorted survivors.
    public var signedBytes: Data { Data(("fedgate secagg survivors v1\n\(round)\n" + survivors.sorted().joined(separator: "\n")).utf8) }

    /// This silo's signature of the list.
    public func sign(as silo: SiloID, with key: Curve25519.Signing.PrivateKey) throws -> ConsistencySignature {
        ConsistencySignature(round: round, silo: silo, signature: try key.signature(for: signedBytes))
    }

    /// Whether `request` may be unmasked by a silo that signed this list: the same round and
    /// survivors, at least `threshold` signatures, every one a survivor's and valid over the list.
    public func check(_ request: UnmaskingRequest, keys: [SiloID: Curve25519.Signing.PublicKey], threshold: Int, silo: SiloID) throws {
        guard request.round == round, request.survivors.sorted() == survivors else {
            throw SecureAggregationError.inconsistentView(silo: silo, detail: "the unmasking request names survivors \(request.survivors.sorted()), "
                                                          + "this silo signed \(survivors)")
        }
        let signatures = request.signatures ?? [:]
        for (signer, signature) in signatures {
            guard survivors.contains(signer), let key = keys[signer], key.isValidSignature(signature, for: signedBytes) else {
                throw SecureAggregationError.inconsistentView(silo: silo, detail: "\(signer)'s signature is not of the survivor list this silo signed")
            }
        }
        guard signatures.count >= threshold else {
            throw SecureAggregationError.belowThreshold(phase: "consistency check", survivors: signatures.count, threshold: threshold)
        }
    }
}

/// A survivor's signature of the survivor list (`ConsistencyCheck`).
public struct ConsistencySignature: Sendable, Equatable, Codable {
    public let round: UInt64
    public let silo: SiloID
    public let signature: Data
    public init(round: UInt64, silo: SiloID, signature: Data) { (self.round, self.silo, self.signature) = (round, silo, signature) }
}

/// Phase 3, survivor → broker: shares of survivors' self-mask seeds and of dropped silos' masking
/// keys — never both for the same silo.
public struct UnmaskingResponse: Sendable, Equatable, Codable {
    public let round: UInt64
    public let silo: SiloID
    public let selfMaskShares: [SiloID: ShamirSecretSharing.Share]
    public let maskingKeyShares: [SiloID: ShamirSecretSharing.Share]

    public var wireSize: Int { 8 + silo.utf8.count + (selfMaskShares.count + maskingKeyShares.count) * (8 + 5 * 8 + 16) }
}
