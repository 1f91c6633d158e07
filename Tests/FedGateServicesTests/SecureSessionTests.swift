import Foundation
import Crypto
import FedGateProto
import FedGateSecureAggregation
@testable import FedGateServices
import FedGateTransport
import Testing

/// A gateway's side of a secure round as a value, three silos and the protocol's server in one
/// process: no broker, no certificates (the gateway checks those before `share`), no network.
@Suite("A silo's secure-aggregation session")
struct SecureSessionTests {
    static let silos = ["hospital-0", "hospital-1", "hospital-2"]
    static let dimension = 6

    static func setup(threshold: Int = 2) -> Fedgate_V1_SecAggSetup {
        var setup = Fedgate_V1_SecAggSetup()
        setup.id = 41
        setup.participants = silos
        setup.threshold = UInt32(threshold)
        setup.clipNorm = 1
        setup.honestSilos = UInt32(silos.count)
        setup.noiseMultiplier = 0.01
        return setup
    }

    /// Each silo's clipped update (norm below 1).
    static func update(_ i: Int) -> [Float] { (0..<dimension).map { Float(i + 1) * 0.05 * ($0 % 2 == 0 ? 1 : -1) } }

    /// Runs the protocol: every silo advertises and shares, those in `uploading` mask their update,
    /// the survivors unmask. Returns the decoded sum and the survivors the server names.
    func run(uploading: Set<String>, minimums: SecureSession.Minimums = .none) throws -> (sum: [Float], survivors: [String]) {
        let setup = Self.setup()
        let configuration = try SecureAggregationConfiguration(round: setup.id, participants: setup.participants,
                                                               threshold: Int(setup.threshold), dimension: Self.dimension)
        var server = SecureAggregationServer(configuration: configuration)
        var sessions: [String: SecureSession] = [:]
        for silo in Self.silos {
            let (session, advertisement) = try SecureSession.begin(setup, silo: silo, dimension: Self.dimension, minimums: minimums)
            sessions[silo] = session
            try server.receive(advertisement)
        }
        let identities = sessions.mapValues { $0.identityKey.publicKey }
        for silo in Self.silos {
            let shares = try sessions[silo]!.share(try server.advertisements(for: silo), verified: identities)
            try server.receive(shares: shares, from: silo)
        }
        for (i, silo) in Self.silos.enumerated() where uploading.contains(silo) {
            sessions[silo]!.update = (Self.update(i), TransferHeader(planHash: "p", round: 1, totalBytes: 4 * Self.dimension))
            #expect(try sessions[silo]!.maskIfReady() == nil, "masked before the relay arrived")
            let relay = try server.shares(for: silo)
            sessions[silo]!.received(SecAggRelay(shares: relay.shares, sharers: relay.sharers))
            let (input, header) = try #require(try sessions[silo]!.maskIfReady())
            #expect(header.planHash == "p" && input.values.count == Self.dimension)
            #expect(try sessions[silo]!.maskIfReady() == nil, "masked twice")
            try server.receive(input)
        }
        // The consistency check: each survivor signs the list; the request carries every signature.
        let told = try server.unmaskingRequest().survivors
        let check = ConsistencyCheck(round: setup.id, survivors: told)
        var signatures: [SiloID: Data] = [:]
        for silo in told { signatures[silo] = try sessions[silo]!.sign(check).signature }
        let request = UnmaskingRequest(round: setup.id, survivors: told, signatures: signatures)
        let responses = try uploading.sorted().map { try sessions[$0]!.unmask(request) }
        let (sum, survivors) = try server.unmask(responses)
        let noise = try DistributedNoise(clipNorm: setup.clipNorm, silos: Self.silos.count, honestSilos: Int(setup.honestSilos),
                                         noiseMultiplier: setup.noiseMultiplier)
        return (noise.codec.decode(sum), survivors)
    }

    @Test("the unmasked sum of the sessions' masked updates is the sum of their updates, within the distributed noise")
    func sumOfUpdates() throws {
        let (sum, survivors) = try run(uploading: Set(Self.silos))
        #expect(survivors == Self.silos)
        let plain = (0..<Self.dimension).map { d in (0..<3).map { Self.update($0)[d] }.reduce(0, +) }
        for (got, want) in zip(sum, plain) { #expect(abs(got - want) < 0.1, "\(sum) against \(plain)") }
    }

    @Test("a silo that shared its keys and then dropped before masking is left out: the survivors' sum unmasks without it")
    func droppedSilo() throws {
        let (sum, survivors) = try run(uploading: ["hospital-0", "hospital-2"])
        #expect(survivors == ["hospital-0", "hospital-2"])
        let plain = (0..<Self.dimension).map { Self.update(0)[$0] + Self.update(2)[$0] }
        for (got, want) in zip(sum, plain) { #expect(abs(got - want) < 0.1, "\(sum) against \(plain)") }
    }

    @Test("peers whose identity the gateway could not verify are treated as dropped, not trusted")
    func unverifiedPeers() throws {
        let setup = Self.setup()
        var sessions: [SecureSession] = []
        var advertisements: [KeyAdvertisement] = []
        for silo in Self.silos {
            let (session, advertisement) = try SecureSession.begin(setup, silo: silo, dimension: Self.dimension)
            sessions.append(session)
            advertisements.append(advertisement)
        }
        // hospital-2's binding failed the CA check: its advertisement cannot be used.
        let verified = [Self.silos[0]: sessions[0].identityKey.publicKey, Self.silos[1]: sessions[1].identityKey.publicKey]
        var withoutUnverified = sessions[0]
        #expect(throws: (any Error).self) { try sessions[0].share(advertisements, verified: verified) }
        let shares = try withoutUnverified.share(Array(advertisements.prefix(2)), verified: verified)
        #expect(shares.map(\.to) == ["hospital-1"], "one share for the verified peer, none for the unverified one")
    }

    @Test("a silo whose policy asks a higher threshold than the round's takes no part: it does not even advertise keys")
    func thresholdBelowPolicy() {
        #expect { try SecureSession.begin(Self.setup(threshold: 2), silo: "hospital-0", dimension: Self.dimension, minimums: .init(threshold: 3)) } throws: {
            "\($0)".contains("threshold is 2 of 3 silos; this silo's policy asks at least 3")
        }
        #expect(throws: Never.self) { try SecureSession.begin(Self.setup(threshold: 3), silo: "hospital-0", dimension: Self.dimension, minimums: .init(threshold: 3)) }
    }

    @Test("a survivor whose policy asks more survivors than remain will not help unmask their sum")
    func survivorsBelowPolicy() throws {
        #expect { try run(uploading: ["hospital-0", "hospital-2"], minimums: .init(survivors: 3)) } throws: {
            "\($0)".contains("2 silos survived the round; this silo's policy helps unmask the sum of at least 3")
        }
        let (_, survivors) = try run(uploading: Set(Self.silos), minimums: .init(survivors: 3))
        #expect(survivors.count == 3, "with every silo surviving the sum unmasks")
    }
}
