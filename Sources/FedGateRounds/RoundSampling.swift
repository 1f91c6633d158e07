import Crypto
import Foundation

/// Client sampling: which of a round's eligible silos are offered the round. A plan asks for a
/// fraction of them (with a floor) or a count; the silos are ranked by SHA-256 of the plan's hash,
/// the round's number and the silo's id, and the first k taken. Anyone holding the plan's hash can
/// recompute who was sampled in which round, so a broker cannot single a silo out (or leave one out)
/// without it showing; over many rounds every silo is sampled about equally often.
public struct RoundSampling: Sendable, Equatable {
    public enum Size: Sendable, Equatable {
        /// ⌈fraction × eligible⌉ silos, at least `floor`.
        case fraction(Double, floor: Int)
        /// Exactly this many (all of them when fewer are eligible).
        case count(Int)
    }

    public let size: Size

    public init(_ size: Size) { self.size = size }

    /// How many of `eligible` silos a round offers.
    public func count(of eligible: Int) -> Int {
        switch size {
        case .fraction(let f, let floor): min(eligible, max(floor, Int((f * Double(eligible)).rounded(.up))))
        case .count(let k): min(eligible, k)
        }
    }

    /// The silos round `round` of plan `planHash` offers, in their ids' order.
    public func sample(_ eligible: [String], planHash: String, round: Int) -> [String] {
        let k = count(of: eligible.count)
        let ranked = eligible.map { silo in (silo, Self.rank(planHash, round, silo)) }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
        return ranked.prefix(k).map(\.0).sorted()
    }

    /// A silo's place in a round's draw: the first 64 bits of SHA-256("fedgate-sampling", plan, round, silo).
    static func rank(_ plan: String, _ round: Int, _ silo: String) -> UInt64 {
        SHA256.hash(data: Data("fedgate-sampling\u{0}\(plan)\u{0}\(round)\u{0}\(silo)".utf8)).prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
}
