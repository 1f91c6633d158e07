import Crypto
import FedGatePKI
import FedGateSecureAggregation
import FedGateTransport
import Foundation
import X509

/// Binds a silo's per-round secure-aggregation identity key to its consortium certificate, so the
/// broker that relays the keys cannot substitute its own: the silo signs the key with its
/// certificate's key, and every peer checks the certificate against the CA and the signature.
struct SecAggBinding: Codable, Sendable, Equatable {
    let silo: String
    let identityKey: Data
    let certificatePEM: String
    let signature: Data

    static func signedBytes(id: UInt64, silo: String, identityKey: Data) -> Data {
        var d = Data("fedgate-secagg-v1/identity".utf8)
        d.append(contentsOf: withUnsafeBytes(of: id.littleEndian) { Array($0) })
        d.append(contentsOf: Array(silo.utf8) + [0])
        d.append(identityKey)
        return d
    }

    init(id: UInt64, identityKey: Curve25519.Signing.PrivateKey, credentials: TLSCredentials) throws {
        silo = credentials.identity.id
        self.identityKey = identityKey.publicKey.rawRepresentation
        certificatePEM = credentials.certificatePEM
        let key = try P256.Signing.PrivateKey(pemRepresentation: credentials.keyPEM)
        signature = try key.signature(for: Self.signedBytes(id: id, silo: silo, identityKey: self.identityKey)).derRepresentation
    }

    /// The identity key, once the certificate chains to the CA, names this silo as a silo, and its
    /// key signed the binding for this round.
    func verified(id: UInt64, ca: Certificate, at time: Date = Date()) async throws -> Curve25519.Signing.PublicKey {
        let chain = try Certificate.chain(pemEncoded: certificatePEM)
        let certificate = chain[0]
        let identity = try await ConsortiumCA.identity(of: certificate, trusting: ca, intermediates: Array(chain.dropFirst()), at: time)
        guard identity.id == silo, identity.role == .silo else {
            throw SecureAggregationError.malformed("the identity key for '\(silo)' comes with \(identity)'s certificate")
        }
        guard let publicKey = P256.Signing.PublicKey(certificate.publicKey),
              let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature),
              publicKey.isValidSignature(sig, for: Self.signedBytes(id: id, silo: silo, identityKey: identityKey)) else {
            throw SecureAggregationError.malformed("the identity key for '\(silo)' is not signed by its certificate's key")
        }
        return try Curve25519.Signing.PublicKey(rawRepresentation: identityKey)
    }
}

/// Bodies of the SecAggStep messages (JSON).
struct SecAggAdvertise: Codable, Sendable {
    let advertisement: KeyAdvertisement
    let binding: SecAggBinding
}

struct SecAggKeys: Codable, Sendable {
    let advertisements: [KeyAdvertisement]
    let bindings: [SecAggBinding]
}

struct SecAggRelay: Codable, Sendable {
    let shares: [EncryptedShare]
    let sharers: [SiloID]
}

enum SecAggJSON {
    static func encode<T: Encodable>(_ value: T) throws -> Data { try JSONEncoder().encode(value) }
    static func decode<T: Decodable>(_ type: T.Type, _ data: Data, step: String) throws -> T {
        do { return try JSONDecoder().decode(type, from: data) } catch {
            throw SecureAggregationError.malformed("a '\(step)' step that is not a valid \(T.self): \(error)")
        }
    }
}
