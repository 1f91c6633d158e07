import FedGatePrivacy
import Foundation

/// An empirical privacy audit of the built-in DP-SGD trainer in one training run (Steinke, Nasr and
/// Jagielski, "Privacy auditing with one (1) training run", NeurIPS 2023), with white-box gradient
/// canaries. The rows get `canaries` extra input columns that are always 0, so the weights fed by
/// them get no gradient from any row; each canary is one such weight and a random sign, and is put
/// into the training set with probability ½ (`GradientCanaries`: Poisson-sampled and clipped like a
/// row). After training, each canary's score is how far its weight moved against its sign; the
/// auditor guesses the highest-scoring canaries in and the lowest out, abstains on the rest, and
/// counts the right guesses. Under (ε, 0)-DP the number right among r guesses is dominated by
/// Binomial(r, e^ε/(1 + e^ε)); the largest ε that the count refutes at the stated confidence is the
/// empirical lower bound. δ is left out of the bound, which makes it larger, not smaller (an audit
/// that stays under the claimed ε without it stays under with it). Pure: no I/O.
public struct PrivacyAudit: Sendable {
    public struct Settings: Sendable {
        public var canaries = 600
        /// Guesses made, half "in" (the highest scores) and half "out" (the lowest).
        public var guesses = 400
        public var confidence = 0.95
        public var seed: UInt64 = 1
        public init() {}
    }

    public struct Result: Sendable, Equatable {
        public let canaries: Int
        public let included: Int
        public let guesses: Int
        public let correct: Int
        /// The largest ε the right guesses refute at the confidence (0 when they refute none).
        public let empiricalEpsilon: Double
        public let confidence: Double
    }

    public let settings: Settings
    public init(settings: Settings = Settings()) { self.settings = settings }

    /// Trains `kind` on `data` (with the canary columns added) under `training`, whose DP-SGD is audited.
    public func run(kind: ModelKind, data: Dataset, training: LocalTrainingSettings) throws -> Result {
        guard training.dp != nil else { throw DatasetError(file: nil, line: nil, reason: "the audit is of DP-SGD: give the training its DP settings") }
        let m = settings.canaries
        guard m >= 2, settings.guesses >= 2, settings.guesses <= m else {
            throw DatasetError(file: nil, line: nil, reason: "the audit needs at least 2 canaries and between 2 and that many guesses")
        }
        let padded = try Self.withCanaryColumns(data, count: m)
        var global = try Network(kind: kind, inputs: padded.featureCount, classes: padded.classCount, seed: settings.seed)
        let coordinates = try Self.canaryCoordinates(global, data: data, count: m)
        var random = SimulationRandom(seed: settings.seed ^ 0xa0d17)
        let signs: [Float] = (0..<m).map { _ in Bool.random(using: &random) ? 1 : -1 }
        let included: [Bool] = (0..<m).map { _ in Bool.random(using: &random) }
        var local = training
        local.canaries = GradientCanaries(coordinates: coordinates.indices.filter { included[$0] }.map { coordinates[$0] },
                                          signs: signs.indices.filter { included[$0] }.map { signs[$0] })
        let start = global.parameters
        var scaffold: LocalTrainer.Scaffold?
        var shuffle = SimulationRandom(seed: settings.seed)
        global.parameters = try LocalTrainer(settings: local).train(global, on: padded, scaffold: &scaffold, shuffle: &shuffle).parameters
        // A drawn canary adds sign·C to its weight's gradient, so gradient descent moves the weight against its sign.
        let scores = (0..<m).map { -Double(signs[$0]) * Double(global.parameters[coordinates[$0]] - start[coordinates[$0]]) }
        let order = scores.indices.sorted { scores[$0] > scores[$1] }
        let k = settings.guesses / 2
        let correct = order.prefix(k).filter { included[$0] }.count + order.suffix(settings.guesses - k).filter { !included[$0] }.count
        return Result(canaries: m, included: included.filter { $0 }.count, guesses: settings.guesses, correct: correct,
                      empiricalEpsilon: Self.epsilonLowerBound(guesses: settings.guesses, correct: correct, confidence: settings.confidence),
                      confidence: settings.confidence)
    }

    /// The largest ε with P[Binomial(r, e^ε/(1 + e^ε)) ≥ v] < 1 − confidence: what `v` right guesses
    /// out of `r` refute (0 when they refute no ε > 0, as chance alone would do).
    public static func epsilonLowerBound(guesses r: Int, correct v: Int, confidence: Double) -> Double {
        let beta = 1 - confidence
        func tail(_ epsilon: Double) -> Double { binomialTail(r, v, 1 / (1 + exp(-epsilon))) }
        guard v > 0, tail(0) < beta else { return 0 }
        var (lo, hi) = (0.0, 1.0)
        while tail(hi) < beta, hi < 100 { (lo, hi) = (hi, hi * 2) }
        for _ in 0..<100 {
            let mid = (lo + hi) / 2
            if tail(mid) < beta { lo = mid } else { hi = mid }
        }
        return lo
    }

    /// P[X ≥ v] for X ~ Binomial(n, p), summed in log space.
    static func binomialTail(_ n: Int, _ v: Int, _ p: Double) -> Double {
        guard v > 0 else { return 1 }
        guard v <= n else { return 0 }
        let (lp, lq) = (log(p), log1p(-p))
        var total = 0.0
        for k in v...n {
            let logChoose = lgamma(Double(n) + 1) - lgamma(Double(k) + 1) - lgamma(Double(n - k) + 1)
            total += exp(logChoose + Double(k) * lp + Double(n - k) * lq)
        }
        return min(1, total)
    }

    /// The rows with `count` more input columns, all 0: the canaries' weights hang off them.
    static func withCanaryColumns(_ data: Dataset, count: Int) throws -> Dataset {
        let names = data.featureNames + (0..<count).map { "canary_\($0)" }
        var features: [Float] = []
        features.reserveCapacity(data.count * names.count)
        for i in 0..<data.count { features += data.row(i); features += repeatElement(0, count: count) }
        return try Dataset(featureNames: names, labelName: data.labelName, features: features, labels: data.labels, classCount: data.classCount)
    }

    /// One weight per canary column: the first layer's weight from that column to the first output
    /// (layer0.weight is [out, in], row-major, first in the parameters), so no row's gradient reaches it.
    static func canaryCoordinates(_ net: Network, data: Dataset, count: Int) throws -> [Int] {
        guard net.layerSizes[0] == data.featureCount + count else {
            throw DatasetError(file: nil, line: nil, reason: "the audit's model does not take the canary columns")
        }
        return (0..<count).map { data.featureCount + $0 }
    }
}
