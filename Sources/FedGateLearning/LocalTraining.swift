import Foundation
import FedGatePrivacy
import FedGateTensors

/// DP-SGD settings: Poisson sampling at `samplingRate`, per-example clipping to `clipNorm`, noise
/// σ·C on the summed gradient.
public struct DPSGDSettings: Sendable, Equatable {
    public let noiseMultiplier: Double
    public let clipNorm: Double
    public let samplingRate: Double

    public init(noiseMultiplier: Double, clipNorm: Double, samplingRate: Double) throws {
        try PrivacyError.require(noiseMultiplier.isFinite && noiseMultiplier > 0, "dp_noise_multiplier", "must be > 0, got \(noiseMultiplier)")
        try PrivacyError.require(clipNorm.isFinite && clipNorm > 0, "dp_clip", "must be > 0, got \(clipNorm)")
        try PrivacyError.require(samplingRate.isFinite && samplingRate > 0 && samplingRate <= 1, "dp_sampling_rate", "must be in (0, 1], got \(samplingRate)")
        self.noiseMultiplier = noiseMultiplier
        self.clipNorm = clipNorm
        self.samplingRate = samplingRate
    }

    /// Steps in one epoch: one Poisson batch per 1/q of the data in expectation.
    public var stepsPerEpoch: Int { max(1, Int((1 / samplingRate).rounded())) }
}

/// How a silo trains locally in one round.
public struct LocalTrainingSettings: Sendable, Equatable {
    public enum Optimizer: Sendable, Equatable { case sgd, adam }

    public var epochs = 1
    public var batchSize = 32
    public var learningRate: Float = 0.1
    public var optimizer: Optimizer = .sgd
    /// FedProx proximal coefficient μ (0: plain local SGD).
    public var proxMu: Float = 0
    /// DP-SGD; nil trains without DP.
    public var dp: DPSGDSettings?
    /// With DP: run exactly this many DP-SGD steps (a plan's `local_steps`) instead of whole epochs.
    public var dpSteps: Int?
    /// Draw the DP sampling and noise from keystreams keyed by a known seed, so a run can be
    /// repeated exactly (the networked round against the simulator): no privacy. Never set in production.
    public var repeatableNoise: RepeatableNoise?
    /// Release each step's noisy sum on a grid with the discrete Gaussian instead of floating-point
    /// Gaussian noise (`DiscreteNoise`): the defence against floating-point attacks on the mechanism.
    public var discreteNoise = false
    /// A privacy audit's canaries (`PrivacyAudit`); never set by a gateway.
    public var canaries: GradientCanaries?
    /// Tests only: break the mechanism on purpose, so the audit can be seen to catch it.
    @_spi(Testing) public var auditFault: AuditFault?

    public init() {}
}

/// White-box canaries for a privacy audit: each a parameter coordinate and a sign. In every DP-SGD
/// step each canary is Poisson-sampled at the rows' rate and, when drawn, contributes the gradient
/// sign · 10·C · e(coordinate), clipped like every row's (to C): an example the auditor controls.
public struct GradientCanaries: Sendable, Equatable {
    public let coordinates: [Int]
    public let signs: [Float]
    public init(coordinates: [Int], signs: [Float]) {
        precondition(coordinates.count == signs.count, "one sign per canary")
        (self.coordinates, self.signs) = (coordinates, signs)
    }
}

/// A mechanism broken on purpose (tests only): no noise, or no clipping.
public enum AuditFault: Sendable, Equatable { case noNoise, noClipping }

/// What a silo sends back after local training.
public struct LocalUpdate: Sendable {
    public let parameters: [Float]
    public let examples: Int
    /// The privacy spent, for the ledger (`.noOp` without DP). ε is never computed here.
    public let event: DPEvent
    public let steps: Int
    public let meanLoss: Float
    /// SCAFFOLD: the change in this silo's control variate.
    public let controlDelta: [Float]?
}

/// Trains a copy of the global network on a silo's data.
public struct LocalTrainer: Sendable {
    public let settings: LocalTrainingSettings

    public init(settings: LocalTrainingSettings) { self.settings = settings }

    /// SCAFFOLD control variates: the server's `c` and this silo's `cᵢ` (updated in place).
    public struct Scaffold: Sendable {
        public let server: [Float]
        public var client: [Float]
        public init(server: [Float], client: [Float]) { self.server = server; self.client = client }
    }

    public func train(_ global: Network, on data: Dataset, scaffold: inout Scaffold?, shuffle rng: inout SimulationRandom) throws -> LocalUpdate {
        guard data.count > 0 else { throw DatasetError(file: nil, line: nil, reason: "a silo with no training rows cannot train") }
        guard data.featureCount == global.layerSizes[0] else {
            throw DatasetError(file: nil, line: nil, reason: "data has \(data.featureCount) features, the model expects \(global.layerSizes[0])")
        }
        var run = TrainingRun(global: global, settings: settings, scaffold: scaffold)
        if let dp = settings.dp {
            let grid = settings.discreteNoise
                ? try DiscreteNoise(clipNorm: dp.clipNorm, noiseMultiplier: dp.noiseMultiplier, dimension: global.parameters.count) : nil
            run.dpSGD(dp, on: data, grid: grid)
        } else {
            run.minibatches(on: data, shuffle: &rng)
        }
        let controlDelta = run.updateControlVariates(&scaffold)
        let steps = run.steps
        let event: DPEvent = settings.dp.map { .dpsgd(samplingProbability: $0.samplingRate, noiseMultiplier: $0.noiseMultiplier, steps: steps) } ?? .noOp
        return LocalUpdate(parameters: run.net.parameters, examples: data.count, event: event, steps: steps,
                           meanLoss: run.lossCount > 0 ? run.lossSum / Float(run.lossCount) : 0, controlDelta: controlDelta)
    }
}

/// One silo's local training in progress: the model, its gradients and optimiser state, and the
/// steps and loss so far.
private struct TrainingRun {
    let global: Network
    let settings: LocalTrainingSettings
    let scaffold: LocalTrainer.Scaffold?
    var net: Network
    var ws: Network.Workspace
    var batchGradient: [Float]
    var exampleGradient: [Float]
    var adamM: [Float], adamV: [Float]
    var steps = 0
    var lossSum: Float = 0, lossCount = 0

    init(global: Network, settings: LocalTrainingSettings, scaffold: LocalTrainer.Scaffold?) {
        self.global = global
        self.settings = settings
        self.scaffold = scaffold
        net = global
        let p = global.parameters.count
        ws = Network.Workspace(global)
        batchGradient = [Float](repeating: 0, count: p)
        exampleGradient = [Float](repeating: 0, count: p)
        // Adam's moments only when Adam is used (a large model's zeroed pages are not free).
        let adamSize = settings.optimizer == .adam ? p : 0
        adamM = [Float](repeating: 0, count: adamSize)
        adamV = [Float](repeating: 0, count: adamSize)
    }

    var p: Int { batchGradient.count }

    /// DP-SGD: Poisson-sampled batches, each example's gradient clipped, Gaussian noise on their sum.
    mutating func dpSGD(_ dp: DPSGDSettings, on data: Dataset, grid: DiscreteNoise?) {
        var sampler = ChaCha20Random()            // Poisson sampling must be secret: CSPRNG
        var noise = GaussianNoiseGenerator()
        var integers = ChaCha20Random()
        if let repeatable = settings.repeatableNoise {
            (sampler, noise, integers) = (repeatable.sampler, repeatable.noise, repeatable.integers)
        }
        // On the grid each row is clipped a little tighter, so that the rounded sum moves by at most C.
        let c = grid.map { Float($0.rowClip) } ?? Float(dp.clipNorm)
        // Poisson sampling by geometric gaps: the gap to the next sampled row is
        // ⌊ln U / ln(1 − q)⌋, so a step costs O(q·n) draws instead of n.
        let logKeep = log1p(-dp.samplingRate)
        func nextGap() -> Int {
            if dp.samplingRate >= 1 { return 0 }
            let u = uniform(&sampler)
            return Int(min(log(u) / logKeep, Double(data.count)))
        }
        for _ in 0..<(settings.dpSteps ?? settings.epochs * dp.stepsPerEpoch) {
            for k in 0..<p { batchGradient[k] = 0 }
            var i = nextGap()
            while i < data.count {
                defer { i += 1 + nextGap() }
                for k in 0..<p { exampleGradient[k] = 0 }
                lossSum += net.lossAndGradient(data, row: i, &ws, into: &exampleGradient)
                lossCount += 1
                let norm = Float(VectorMath.l2Norm(exampleGradient))
                let factor = norm > c && settings.auditFault != .noClipping ? c / norm : 1
                VectorMath.axpy(factor, exampleGradient, &batchGradient)
            }
            if let canaries = settings.canaries { addCanaries(canaries, clip: c, rate: dp.samplingRate, sampler: &sampler) }
            if let grid, settings.auditFault != .noNoise {
                grid.release(&batchGradient, using: &integers)
            } else if settings.auditFault != .noNoise {
                batchGradient.withUnsafeMutableBufferPointer {
                    noise.scaleAndAddNoise($0, scale: 1, noiseStandardDeviation: Float(dp.noiseMultiplier * dp.clipNorm))
                }
            }
            // Divide by the expected batch size, which is public (the actual size is not).
            applyStep(scale: 1 / Float(dp.samplingRate * Double(data.count)))
        }
    }

    /// An audit's canaries drawn for this step (each at the rows' sampling rate, from the same CSPRNG)
    /// and added to the batch: a one-hot gradient of norm 10·C, clipped to C like a row's.
    mutating func addCanaries(_ canaries: GradientCanaries, clip c: Float, rate q: Double, sampler: inout ChaCha20Random) {
        let magnitude = 10 * c
        let factor = settings.auditFault == .noClipping ? 1 : c / magnitude
        for (coordinate, sign) in zip(canaries.coordinates, canaries.signs) where coordinate < p {
            let u = uniform(&sampler)
            if u < q { batchGradient[coordinate] += factor * sign * magnitude }
        }
    }

    /// Without DP: shuffled minibatches, `epochs` times over the rows.
    mutating func minibatches(on data: Dataset, shuffle rng: inout SimulationRandom) {
        var order = Array(0..<data.count)
        for _ in 0..<settings.epochs {
            order.shuffle(using: &rng)
            var start = 0
            while start < order.count {
                let end = min(start + settings.batchSize, order.count)
                for k in 0..<p { batchGradient[k] = 0 }
                for i in order[start..<end] {
                    lossSum += net.lossAndGradient(data, row: i, &ws, into: &batchGradient)
                    lossCount += 1
                }
                applyStep(scale: 1 / Float(end - start))
                start = end
            }
        }
    }

    /// One optimiser step with the batch gradient scaled by `scale`.
    mutating func applyStep(scale: Float) {
        // Terms that do not touch data cost no privacy: FedProx and SCAFFOLD corrections.
        if settings.proxMu == 0 && scaffold == nil {
            batchGradient.withUnsafeMutableBufferPointer { VectorMath.scale($0, by: scale) }
        } else {
            for k in 0..<p {
                var g = batchGradient[k] * scale
                if settings.proxMu > 0 { g += settings.proxMu * (net.parameters[k] - global.parameters[k]) }
                if let s = scaffold { g += s.server[k] - s.client[k] }
                batchGradient[k] = g
            }
        }
        steps += 1
        switch settings.optimizer {
        case .sgd:
            VectorMath.axpy(-settings.learningRate, batchGradient, &net.parameters)
        case .adam:
            let b1: Float = 0.9, b2: Float = 0.999, eps: Float = 1e-8
            let c1 = 1 - powf(b1, Float(steps)), c2 = 1 - powf(b2, Float(steps))
            for k in 0..<p {
                let g = batchGradient[k]
                adamM[k] = b1 * adamM[k] + (1 - b1) * g
                adamV[k] = b2 * adamV[k] + (1 - b2) * g * g
                net.parameters[k] -= settings.learningRate * (adamM[k] / c1) / ((adamV[k] / c2).squareRoot() + eps)
            }
        }
    }

    /// SCAFFOLD's new client control variate (option II of Karimireddy et al.:
    /// cᵢ⁺ = cᵢ − c + (x − yᵢ)/(K·η)), set in `scaffold`; the change in it, or nil without SCAFFOLD.
    func updateControlVariates(_ scaffold: inout LocalTrainer.Scaffold?) -> [Float]? {
        guard var s = scaffold else { return nil }
        let k = Float(steps) * settings.learningRate
        var delta = [Float](repeating: 0, count: p)
        for j in 0..<p {
            let updated = s.client[j] - s.server[j] + (global.parameters[j] - net.parameters[j]) / k
            delta[j] = updated - s.client[j]
            s.client[j] = updated
        }
        scaffold = s
        return delta
    }
}

/// A uniform draw in (0, 1) from the CSPRNG's top 53 bits (never 0: the geometric gaps take its logarithm).
private func uniform(_ sampler: inout ChaCha20Random) -> Double { (Double(sampler.next() >> 11) + 0.5) * 0x1p-53 }
