import Foundation

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
public struct UnmaskingRequest: Sendable, Equatable, Codable {
    public let round: UInt64
    public let survivors: [SiloID]

    public var wireSize: Int { 8 + survivors.reduce(0) { $0 + $1.utf8.count + 1 } }
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
