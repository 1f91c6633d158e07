import Crypto
import Foundation

/// Who masks with whom. `complete` is Bonawitz et al. 2017 (every pair); `harary(degree:)` is the
/// SecAgg+ graph of Bell et al. 2020: silos on a ring in a random order that all parties derive from
/// the round's public seed, each joined to its `degree/2` nearest on each side, so each silo's work
/// grows with log n instead of n.
public enum Neighbourhood: Sendable, Equatable {
    case complete
    case harary(degree: Int)

    /// Each silo's neighbours (itself excluded), for participants sorted by id.
    func graph(_ participants: [SiloID], round: UInt64) -> [SiloID: Set<SiloID>] {
        switch self {
        case .complete:
            let all = Set(participants)
            return Dictionary(uniqueKeysWithValues: participants.map { ($0, all.subtracting([$0])) })
        case .harary(let degree):
            // A permutation every party can recompute and nobody can steer: sort by SHA-256 of
            // (round, id), so similar ids do not cluster on the ring.
            func key(_ s: SiloID) -> UInt64 {
                var input = Data("fedgate-secagg-v1/ring".utf8)
                input.append(contentsOf: withUnsafeBytes(of: round.littleEndian) { Array($0) })
                input.append(contentsOf: s.utf8)
                return SHA256.hash(data: input).prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
            }
            let ring = participants.sorted { key($0) < key($1) }
            let n = ring.count
            let half = max(1, min(degree / 2, (n - 1) / 2))
            var result: [SiloID: Set<SiloID>] = [:]
            for (i, s) in ring.enumerated() {
                var ns = Set<SiloID>()
                for k in 1...half {
                    ns.insert(ring[(i + k) % n]); ns.insert(ring[(i - k + n) % n])
                }
                ns.remove(s)
                result[s] = ns
            }
            return result
        }
    }
}

/// The public parameters of one secure-aggregation round, known to every party.
public struct SecureAggregationConfiguration: Sendable, Equatable {
    public let round: UInt64
    /// Participants, sorted; a silo's Shamir point is its index + 1.
    public let participants: [SiloID]
    /// Shares needed to reconstruct a secret (and survivors needed in each neighbourhood).
    public let threshold: Int
    public let neighbourhood: Neighbourhood
    /// Length of each update.
    public let dimension: Int

    public init(round: UInt64, participants: [SiloID], threshold: Int, neighbourhood: Neighbourhood = .complete, dimension: Int) throws {
        let sorted = participants.sorted()
        guard Set(sorted).count == sorted.count, sorted.count >= 2 else {
            throw SecureAggregationError.malformed("a round needs at least two distinct participants")
        }
        guard dimension >= 1 else { throw SecureAggregationError.malformed("the update dimension must be ≥ 1") }
        let graph = neighbourhood.graph(sorted, round: round)
        let smallest = graph.values.map { $0.count + 1 }.min() ?? 0
        guard threshold >= 2, threshold <= smallest else {
            throw SecureAggregationError.malformed("threshold \(threshold) must be between 2 and the smallest neighbourhood (\(smallest), counting the silo itself)")
        }
        // A threshold at or below half a neighbourhood lets a broker split it in two and unmask.
        guard 2 * threshold > smallest else {
            throw SecureAggregationError.malformed("threshold \(threshold) must exceed half of the neighbourhood size \(smallest) so the broker cannot reconstruct both kinds of secret")
        }
        self.round = round
        self.participants = sorted
        self.threshold = threshold
        self.neighbourhood = neighbourhood
        self.dimension = dimension
    }

    func point(of silo: SiloID) -> UInt64? {
        participants.firstIndex(of: silo).map { UInt64($0 + 1) }
    }

    var graph: [SiloID: Set<SiloID>] { neighbourhood.graph(participants, round: round) }
}
