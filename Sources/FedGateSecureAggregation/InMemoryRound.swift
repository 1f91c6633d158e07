import Crypto
import Foundation

/// Runs a whole secure-aggregation round in one process — broker and silos exchanging messages
/// through memory — with silos dropping out at chosen phases. The property tests and
/// `fedgate bench secagg` use it; the networked broker and gateway will drive the same state
/// machines over gRPC.
public struct InMemoryRound: Sendable {
    /// A silo that drops out stops before sending its message of this phase (and never returns).
    public enum Phase: String, Sendable, CaseIterable, Codable {
        case advertiseKeys = "advertise_keys"
        case shareKeys = "share_keys"
        case maskedInput = "masked_input"
        case unmasking
    }

    /// Time and traffic of one round.
    public struct Report: Sendable {
        public var sum: [UInt32] = []
        public var survivors: [SiloID] = []
        /// Seconds of silo computation per phase, summed over silos.
        public var clientSeconds: [Phase: Double] = [:]
        /// Seconds of broker computation (relaying, folding, unmasking).
        public var brokerSeconds = 0.0
        /// Bytes each silo sent and received, by silo.
        public var bytesSent: [SiloID: Int] = [:]
        public var bytesReceived: [SiloID: Int] = [:]
    }

    public let configuration: SecureAggregationConfiguration
    private let identities: [SiloID: Curve25519.Signing.PrivateKey]

    /// A round whose silos get fresh identity keys (standing in for their certificates).
    public init(configuration: SecureAggregationConfiguration) {
        self.init(configuration: configuration,
                  identities: Dictionary(uniqueKeysWithValues: configuration.participants.map { ($0, Curve25519.Signing.PrivateKey()) }))
    }

    /// A round with given identity keys, one per participant.
    public init(configuration: SecureAggregationConfiguration, identities: [SiloID: Curve25519.Signing.PrivateKey]) {
        self.configuration = configuration
        self.identities = identities
    }

    public var directory: [SiloID: Curve25519.Signing.PublicKey] { identities.mapValues(\.publicKey) }

    /// Runs the round over already-encoded updates. `tamper` lets tests play a malicious broker by
    /// rewriting what is relayed to a silo.
    public func run(encoded: [SiloID: [UInt32]], dropouts: [SiloID: Phase] = [:],
                    tamper: Tampering = Tampering()) throws -> Report {
        var clients: [SiloID: SecureAggregationClient] = [:]
        for s in configuration.participants {
            clients[s] = try SecureAggregationClient(configuration: configuration, silo: s, identityKey: identities[s]!, directory: directory)
        }
        var round = Playing(participants: configuration.participants, clients: clients, server: SecureAggregationServer(configuration: configuration),
                            dropouts: dropouts, tamper: tamper)
        try round.advertise()
        try round.share()
        try round.mask(encoded)
        return try round.unmask()
    }
}

/// One in-memory round in play: the silos' clients, the broker's server, and the report of what
/// each phase cost and sent.
private struct Playing {
    typealias Phase = InMemoryRound.Phase
    let participants: [SiloID]
    var clients: [SiloID: SecureAggregationClient]
    var server: SecureAggregationServer
    let dropouts: [SiloID: Phase]
    let tamper: Tampering
    var report = InMemoryRound.Report()
    let clock = ContinuousClock()

    init(participants: [SiloID], clients: [SiloID: SecureAggregationClient], server: SecureAggregationServer,
         dropouts: [SiloID: Phase], tamper: Tampering) {
        self.participants = participants
        self.clients = clients
        self.server = server
        self.dropouts = dropouts
        self.tamper = tamper
    }

    func timed<T>(_ body: () throws -> T) rethrows -> (T, Double) {
        let start = clock.now
        let value = try body()
        let d = clock.now - start
        return (value, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
    }

    /// Whether silo `s` is still in the round at `phase` (it drops out at the phase `dropouts` names).
    func alive(_ s: SiloID, at phase: Phase) -> Bool {
        guard let p = dropouts[s] else { return true }
        return Phase.allCases.firstIndex(of: p)! > Phase.allCases.firstIndex(of: phase)!
    }

    /// Phase 0: advertise keys.
    mutating func advertise() throws {
        for s in participants where alive(s, at: .advertiseKeys) {
            let (ad, t) = try timed { try clients[s]!.advertiseKeys() }
            report.clientSeconds[.advertiseKeys, default: 0] += t
            report.bytesSent[s, default: 0] += ad.wireSize
            report.brokerSeconds += try timed { try server.receive(ad) }.1
        }
    }

    /// Phase 1: share keys.
    mutating func share() throws {
        for s in participants where alive(s, at: .shareKeys) {
            var (ads, tb) = try timed { try server.advertisements(for: s) }
            report.brokerSeconds += tb
            ads = tamper.advertisements(ads, s)
            report.bytesReceived[s, default: 0] += ads.reduce(0) { $0 + $1.wireSize }
            let (shares, t) = try timed { try clients[s]!.shareKeys(ads) }
            report.clientSeconds[.shareKeys, default: 0] += t
            report.bytesSent[s, default: 0] += shares.reduce(0) { $0 + $1.wireSize }
            report.brokerSeconds += try timed { try server.receive(shares: shares, from: s) }.1
        }
    }

    /// Phase 2: masked inputs, folded into the broker's sum as they arrive.
    mutating func mask(_ encoded: [SiloID: [UInt32]]) throws {
        for s in participants where alive(s, at: .maskedInput) {
            guard let update = encoded[s] else { throw SecureAggregationError.malformed("no update for silo '\(s)'") }
            var (relay, tb) = try timed { try server.shares(for: s) }
            report.brokerSeconds += tb
            relay = tamper.shares(relay, s)
            report.bytesReceived[s, default: 0] += relay.shares.reduce(0) { $0 + $1.wireSize } + relay.sharers.reduce(0) { $0 + $1.utf8.count + 1 }
            let (input, t) = try timed { try clients[s]!.maskedInput(encoded: update, shares: relay.shares, sharedKeys: relay.sharers) }
            report.clientSeconds[.maskedInput, default: 0] += t
            report.bytesSent[s, default: 0] += input.wireSize
            report.brokerSeconds += try timed { try server.receive(input) }.1
        }
    }

    /// Phase 3: unmasking; the report with the sum and the survivors.
    mutating func unmask() throws -> InMemoryRound.Report {
        let (request, tr) = try timed { try server.unmaskingRequest() }
        report.brokerSeconds += tr
        var responses: [UnmaskingResponse] = []
        for s in request.survivors where alive(s, at: .unmasking) {
            for r in tamper.unmaskingRequests(request, s) {
                report.bytesReceived[s, default: 0] += r.wireSize
                let (response, t) = try timed { try clients[s]!.unmask(r) }
                report.clientSeconds[.unmasking, default: 0] += t
                report.bytesSent[s, default: 0] += response.wireSize
                responses.append(response)
            }
        }
        let (result, tu) = try timed { try server.unmask(responses) }
        report.brokerSeconds += tu
        report.sum = result.sum
        report.survivors = result.survivors
        return report
    }
}

/// A malicious broker's rewrites of what it relays, for the tamper tests. Identity by default.
public struct Tampering: Sendable {
    public var advertisements: @Sendable ([KeyAdvertisement], SiloID) -> [KeyAdvertisement] = { ads, _ in ads }
    public var shares: @Sendable ((shares: [EncryptedShare], sharers: [SiloID]), SiloID) -> (shares: [EncryptedShare], sharers: [SiloID]) = { relay, _ in relay }
    public var unmaskingRequests: @Sendable (UnmaskingRequest, SiloID) -> [UnmaskingRequest] = { request, _ in [request] }
    public init() {}
}
