import Crypto
import Foundation
import Testing
@testable import FedGateSecureAggregation

@Suite("A broker that tampers is caught by the silos")
struct TamperingTests {
    let ids = silos(5)
    let config: SecureAggregationConfiguration
    let updates: [SiloID: [UInt32]]

    init() throws {
        config = try SecureAggregationConfiguration(round: 42, participants: silos(5), threshold: 3, dimension: 16)
        var g = ParameterGenerator(state: 1)
        updates = randomUpdates(silos(5), dimension: 16, using: &g)
    }

    func expectFailure(_ tamper: Tampering, _ matches: (SecureAggregationError) -> Bool) {
        do {
            _ = try InMemoryRound(configuration: config).run(encoded: updates, tamper: tamper)
            Issue.record("the tampered round completed")
        } catch let error as SecureAggregationError {
            #expect(matches(error), "\(error)")
            #expect(!error.description.isEmpty)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a substituted masking key fails its signature check")
    func substitutedKey() {
        var tamper = Tampering()
        tamper.advertisements = { ads, to in
            guard to == "silo-01" else { return ads }
            return ads.map { ad in
                guard ad.silo == "silo-02" else { return ad }
                let attacker = Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation
                return KeyAdvertisement(round: ad.round, silo: ad.silo, encryptionKey: ad.encryptionKey, maskingKey: attacker, signature: ad.signature)
            }
        }
        expectFailure(tamper) { if case .invalidSignature(let s) = $0 { return s == "silo-02" }; return false }
    }

    @Test("a share withheld from a silo while its sender is listed is detected")
    func withheldShare() {
        var tamper = Tampering()
        tamper.shares = { relay, to in
            guard to == "silo-03" else { return relay }
            return (relay.shares.filter { $0.from != "silo-00" }, relay.sharers)
        }
        expectFailure(tamper) { if case .inconsistentView(let s, let detail) = $0 { return s == "silo-03" && detail.contains("silo-00") }; return false }
    }

    @Test("an altered ciphertext fails authentication")
    func alteredShare() {
        var tamper = Tampering()
        tamper.shares = { relay, to in
            guard to == "silo-04" else { return relay }
            var shares = relay.shares
            var bytes = Array(shares[0].ciphertext)
            bytes[bytes.count / 2] ^= 0x01
            shares[0] = EncryptedShare(round: shares[0].round, from: shares[0].from, to: shares[0].to, ciphertext: Data(bytes))
            return (shares, relay.sharers)
        }
        expectFailure(tamper) { if case .tamperedShare(_, let to) = $0 { return to == "silo-04" }; return false }
    }

    @Test("a key advertisement replayed from an earlier round is refused")
    func replayedAdvertisement() throws {
        // Record silo-02's advertisement in round 41, then replay it into round 42.
        let oldConfig = try SecureAggregationConfiguration(round: 41, participants: ids, threshold: 3, dimension: 16)
        let identities = Dictionary(uniqueKeysWithValues: ids.map { ($0, Curve25519.Signing.PrivateKey()) })
        var old = try SecureAggregationClient(configuration: oldConfig, silo: "silo-02", identityKey: identities["silo-02"]!, directory: identities.mapValues(\.publicKey))
        let stale = try old.advertiseKeys()
        var tamper = Tampering()
        tamper.advertisements = { ads, to in ads.map { $0.silo == "silo-02" && to != "silo-02" ? stale : $0 } }
        do {
            _ = try InMemoryRound(configuration: config, identities: identities).run(encoded: updates, tamper: tamper)
            Issue.record("the replayed advertisement was accepted")
        } catch let error as SecureAggregationError {
            guard case .replay(let s, _) = error else { Issue.record("unexpected \(error)"); return }
            #expect(s == "silo-02")
        }
    }

    @Test("a second unmasking request (to reveal the other kind of share) is refused")
    func doubleUnmasking() {
        var tamper = Tampering()
        tamper.unmaskingRequests = { request, to in
            guard to == "silo-01" else { return [request] }
            // First claim silo-00 survived (reveal its self-mask share), then that it dropped.
            return [request, UnmaskingRequest(round: request.round, survivors: request.survivors.filter { $0 != "silo-00" })]
        }
        expectFailure(tamper) { if case .inconsistentView(let s, let detail) = $0 { return s == "silo-01" && detail.contains("second") }; return false }
    }

    @Test("a threshold at or below half a neighbourhood is refused up front")
    func weakThreshold() {
        #expect(throws: SecureAggregationError.self) { try SecureAggregationConfiguration(round: 1, participants: silos(6), threshold: 3, dimension: 4) }
        #expect(throws: SecureAggregationError.self) { try SecureAggregationConfiguration(round: 1, participants: ["a"], threshold: 1, dimension: 4) }
    }
}
