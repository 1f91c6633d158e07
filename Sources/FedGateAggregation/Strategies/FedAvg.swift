import FedGateTensors

/// FedAvg (McMahan et al. 2017): the new model is the global one plus the example-weighted mean
/// update, folded in one pass.
public struct FedAvg: AggregationStrategy {
    public let name = "fedavg"
    public init() {}

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        try AggregationChecks.nonEmpty(updates, name)
        var next = global
        VectorMath.axpy(1, WeightedAverage.meanUpdate(updates, dimension: global.count), &next)
        return AggregationOutcome(parameters: next)
    }
}

/// FedAvgM (Hsu et al. 2019): server momentum on the mean update, v ← βv + Δ, x ← x + η·v.
public struct FedAvgM: AggregationStrategy {
    public let name = "fedavgm"
    public let serverLearningRate: Float
    public let momentum: Float
    private var velocity: [Float] = []

    public init(serverLearningRate: Float = 1, momentum: Float = 0.9) {
        self.serverLearningRate = serverLearningRate
        self.momentum = momentum
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        try AggregationChecks.nonEmpty(updates, name)
        if velocity.count != global.count { velocity = [Float](repeating: 0, count: global.count) }
        VectorMath.scale(&velocity, by: momentum)
        VectorMath.axpy(1, WeightedAverage.meanUpdate(updates, dimension: global.count), &velocity)
        var next = global
        VectorMath.axpy(serverLearningRate, velocity, &next)
        return AggregationOutcome(parameters: next)
    }
}

/// Adaptive server optimisers (Reddi et al. 2021, "Adaptive Federated Optimization"): the mean
/// update is a pseudo-gradient for Adagrad, Adam or Yogi on the server.
public struct FedAdaptive: AggregationStrategy {
    public enum Rule: String, Sendable { case adagrad, adam, yogi }

    public let rule: Rule
    public var name: String { "fed" + rule.rawValue }
    public let serverLearningRate: Float
    public let beta1: Float, beta2: Float, tau: Float
    private var m: [Float] = [], v: [Float] = []

    public init(rule: Rule, serverLearningRate: Float = 0.01, beta1: Float = 0.9, beta2: Float = 0.99, tau: Float = 1e-3) {
        self.rule = rule
        self.serverLearningRate = serverLearningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
    }

    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        try AggregationChecks.nonEmpty(updates, name)
        let delta = WeightedAverage.meanUpdate(updates, dimension: global.count)
        if m.count != global.count {
            m = [Float](repeating: 0, count: global.count)
            v = [Float](repeating: tau * tau, count: global.count)
        }
        var next = global
        for k in 0..<global.count {
            let d = delta[k], d2 = d * d
            m[k] = beta1 * m[k] + (1 - beta1) * d
            switch rule {
            case .adagrad: v[k] += d2
            case .adam: v[k] = beta2 * v[k] + (1 - beta2) * d2
            case .yogi: v[k] -= (1 - beta2) * d2 * (v[k] - d2 > 0 ? 1 : (v[k] - d2 < 0 ? -1 : 0))
            }
            next[k] += serverLearningRate * m[k] / (v[k].squareRoot() + tau)
        }
        return AggregationOutcome(parameters: next)
    }
}
