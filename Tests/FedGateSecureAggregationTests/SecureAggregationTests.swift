import Crypto
import Foundation
import Testing
import FedGateTestSupport
@testable import FedGateSecureAggregation

/// A small deterministic generator for property-test parameters (the protocol's own randomness
/// still comes from the system CSPRNG).
struct ParameterGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58476d1ce4e5b9
        z = (z ^ (z >> 27)) &* 0x94d049bb133111eb
        return z ^ (z >> 31)
    }
}

func silos(_ n: Int) -> [SiloID] { (0..<n).map { String(format: "silo-%02d", $0) } }

func randomUpdates(_ ids: [SiloID], dimension: Int, using g: inout ParameterGenerator) -> [SiloID: [UInt32]] {
    Dictionary(uniqueKeysWithValues: ids.map { id in (id, (0..<dimension).map { _ in UInt32.random(in: 0...UInt32.max, using: &g) }) })
}

func plainSum(_ updates: [SiloID: [UInt32]], of ids: some Sequence<SiloID>, dimension: Int) -> [UInt32] {
    var s = [UInt32](repeating: 0, count: dimension)
    for id in ids { for i in 0..<dimension { s[i] &+= updates[id]![i] } }
    return s
}

@Suite("Secure aggregation protocol")
struct SecureAggregationTests {
    @Test("Shamir: any t of n shares give the secret back")
    func shamir() throws {
        let secret = (0..<32).map { UInt8($0 * 7 & 0xff) }
        let sharing = try ShamirSecretSharing(threshold: 3)
        let shares = try sharing.split(secret, for: [1, 2, 3, 4, 5])
        for subset in [[0, 1, 2], [2, 3, 4], [0, 2, 4], [4, 1, 3]] {
            #expect(try sharing.reconstruct(subset.map { shares[$0] }) == secret)
        }
        // Two shares are not enough: interpolating them as if t were 2 gives something else.
        #expect(try ShamirSecretSharing(threshold: 2).reconstruct([shares[0], shares[1]]) != secret)
        #expect(throws: SecureAggregationError.self) { try sharing.reconstruct([shares[0], shares[1]]) }
    }

    @Test("property: for random n, threshold, sizes and dropouts at every phase, the unmasked sum equals the plain sum of the survivors, or the round aborts below threshold")
    func unmaskedSumEqualsPlainSum() async throws {
        try await onCPULane {
            var g = ParameterGenerator(state: 2026)
            var completed = 0, aborted = 0
            for trial in 0..<14 {
                let n = trial < 2 ? [3, 50][trial] : Int.random(in: 3...24, using: &g)
                let threshold = Int.random(in: (n / 2 + 1)...n, using: &g)
                let dimension = Int.random(in: 1...300, using: &g)
                let ids = silos(n)
                let config = try SecureAggregationConfiguration(round: UInt64(trial), participants: ids, threshold: threshold, dimension: dimension)
                var dropouts: [SiloID: InMemoryRound.Phase] = [:]
                let dropCount = Int.random(in: 0...(n - threshold + (trial % 3 == 0 ? 2 : 0)), using: &g)
                for id in ids.shuffled(using: &g).prefix(min(dropCount, n)) {
                    dropouts[id] = InMemoryRound.Phase.allCases.randomElement(using: &g)!
                }
                let updates = randomUpdates(ids, dimension: dimension, using: &g)
                func left(after phase: InMemoryRound.Phase) -> Set<SiloID> {
                    Set(ids.filter { id in
                        guard let p = dropouts[id] else { return true }
                        return InMemoryRound.Phase.allCases.firstIndex(of: p)! > InMemoryRound.Phase.allCases.firstIndex(of: phase)!
                    })
                }
                let counts = InMemoryRound.Phase.allCases.map { left(after: $0).count }
                let shouldComplete = counts.allSatisfy { $0 >= threshold }
                do {
                    let report = try InMemoryRound(configuration: config).run(encoded: updates, dropouts: dropouts)
                    #expect(shouldComplete, "trial \(trial): completed although a phase fell below threshold \(counts)")
                    let u3 = left(after: .maskedInput)
                    #expect(Set(report.survivors) == u3)
                    #expect(report.sum == plainSum(updates, of: u3, dimension: dimension), "trial \(trial): n=\(n) t=\(threshold) d=\(dimension)")
                    completed += 1
                } catch let error as SecureAggregationError {
                    guard case .belowThreshold = error else { Issue.record("trial \(trial): unexpected \(error)"); continue }
                    #expect(!shouldComplete, "trial \(trial): aborted (\(error)) with \(counts) ≥ \(threshold)")
                    aborted += 1
                }
            }
            #expect(completed >= 8)
            #expect(aborted >= 1)
        }
    }

    @Test("SecAgg+ neighbourhoods: the sum is exact with dropouts, and each silo shares with only its neighbours")
    func hararyGraph() async throws {
        try await onCPULane {
            var g = ParameterGenerator(state: 7)
            let ids = silos(30)
            let config = try SecureAggregationConfiguration(round: 9, participants: ids, threshold: 6, neighbourhood: .harary(degree: 8), dimension: 50)
            #expect(config.graph.values.allSatisfy { $0.count == 8 })
            let updates = randomUpdates(ids, dimension: 50, using: &g)
            let dropouts: [SiloID: InMemoryRound.Phase] = ["silo-03": .maskedInput, "silo-17": .unmasking, "silo-22": .shareKeys]
            let report = try InMemoryRound(configuration: config).run(encoded: updates, dropouts: dropouts)
            let u3 = Set(ids).subtracting(["silo-03", "silo-22"])
            #expect(report.sum == plainSum(updates, of: u3, dimension: 50))
            // Each silo received 9 advertisements (8 neighbours and its own), not 30.
            let full = try SecureAggregationConfiguration(round: 9, participants: ids, threshold: 16, dimension: 50)
            let fullReport = try InMemoryRound(configuration: full).run(encoded: updates)
            #expect(report.bytesReceived["silo-00"]! * 2 < fullReport.bytesReceived["silo-00"]!)
        }
    }

    @Test("the broker's view of a silo's masked update is uniform and uncorrelated with the update")
    func maskedUpdateRevealsNothing() throws {
        let d = 20_000
        let ids = silos(3)
        let config = try SecureAggregationConfiguration(round: 1, participants: ids, threshold: 2, dimension: d)
        let identities = Dictionary(uniqueKeysWithValues: ids.map { ($0, Curve25519.Signing.PrivateKey()) })
        let directory = identities.mapValues(\.publicKey)
        // Silo 0 holds a highly structured update, a ramp; drive the round by hand to see exactly
        // what the broker receives from it.
        let ramp = (0..<d).map { UInt32($0 * 1000) }
        var clients = try ids.map { try SecureAggregationClient(configuration: config, silo: $0, identityKey: identities[$0]!, directory: directory) }
        var server = SecureAggregationServer(configuration: config)
        for i in clients.indices { try server.receive(try clients[i].advertiseKeys()) }
        for i in clients.indices { try server.receive(shares: try clients[i].shareKeys(try server.advertisements(for: ids[i])), from: ids[i]) }
        let relay = try server.shares(for: ids[0])
        let masked = try clients[0].maskedInput(encoded: ramp, shares: relay.shares, sharedKeys: relay.sharers).values
        // Uniform: χ² over 16 buckets of the top four bits (15 degrees of freedom; 99.99 % quantile ≈ 44).
        var buckets = [Double](repeating: 0, count: 16)
        for v in masked { buckets[Int(v >> 28)] += 1 }
        let expected = Double(d) / 16
        let chi2 = buckets.reduce(0) { $0 + ($1 - expected) * ($1 - expected) / expected }
        #expect(chi2 < 44, "χ² = \(chi2)")
        // Uncorrelated with the ramp.
        let x = ramp.map(Double.init), y = masked.map(Double.init)
        let mx = x.reduce(0, +) / Double(d), my = y.reduce(0, +) / Double(d)
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for i in 0..<d { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) * (x[i] - mx); syy += (y[i] - my) * (y[i] - my) }
        #expect(abs(sxy / (sxx * syy).squareRoot()) < 5 / Double(d).squareRoot())
    }
}
