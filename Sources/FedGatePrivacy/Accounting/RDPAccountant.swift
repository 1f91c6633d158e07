import Foundation

/// Rényi-DP accountant: per-order RDP of every event, summed, then converted to (ε, δ).
///
/// Orders default to dp-accounting's 156 (1.1 … 10.9, 11 … 63, 128, 256, 512, 1024). The
/// conversion is Canonne–Kamath–Steinke 2020 Prop. 12 / Balle et al. 2020 Thm 21, as in
/// dp-accounting, with the KL bound giving ε = 0 where it applies.
public struct RDPAccountant: PrivacyAccountant {
    /// dp-accounting's default orders.
    public static let defaultOrders: [Double] = {
        let fractional: [Double] = (1...99).map { (k: Int) -> Double in 1 + Double(k) / 10 }
        let integral: [Double] = (11...63).map { (k: Int) -> Double in Double(k) }
        let large: [Double] = [128, 256, 512, 1024]
        return fractional + integral + large
    }()

    /// The orders α at which RDP is tracked.
    public let orders: [Double]
    /// The accumulated RDP at each order.
    public private(set) var rdp: [Double]

    public init(orders: [Double] = RDPAccountant.defaultOrders) {
        precondition(!orders.isEmpty && orders.allSatisfy { $0 > 1 }, "RDP orders must all exceed 1")
        self.orders = orders
        self.rdp = Array(repeating: 0, count: orders.count)
    }

    public mutating func compose(_ event: DPEvent) throws {
        try event.validate()
        let add = try Self.rdp(of: event.simplified, orders: orders)
        for k in rdp.indices { rdp[k] += add[k] }
    }

    /// RDP of an event at each order.
    public static func rdp(of event: DPEvent, orders: [Double]) throws -> [Double] {
        switch event {
        case .noOp:
            return Array(repeating: 0, count: orders.count)
        case .gaussian(let sigma):
            return orders.map { $0 / (2 * sigma * sigma) }
        case .discreteGaussian(let sigma, let sensitivity):
            // N_Z(0, σ²) with integer sensitivity Δ is (Δ²/2σ²)-zCDP (Canonne, Kamath, Steinke 2020, Thm 4).
            let rho = sensitivity * sensitivity / (2 * sigma * sigma)
            return orders.map { $0 * rho }
        case .distributedDiscreteGaussian(let sigma, let silos, let dimension, let sensitivity):
            let rho = DistributedDiscreteGaussianBound.rho(localSigma: sigma, silos: silos, dimension: dimension, l2Sensitivity: sensitivity)
            return orders.map { $0 * rho }
        case .laplace(let b):
            // Mironov 2017, Prop. 6.
            return orders.map { a in
                let lhs = log(a / (2 * a - 1)) + (a - 1) / b
                let rhs = log((a - 1) / (2 * a - 1)) - a / b
                return SpecialFunctions.logAdd(lhs, rhs) / (a - 1)
            }
        case .poissonSampled(let q, let inner):
            switch inner {
            case .gaussian(let sigma):
                return orders.map { SubsampledGaussianRDP.rdp(q: q, sigma: sigma, alpha: $0) }
            case .noOp:
                return Array(repeating: 0, count: orders.count)
            default:
                if q == 1 { return try rdp(of: inner, orders: orders) }
                throw PrivacyError(field: "event.poisson_sampled.event",
                                   reason: "the RDP accountant supports Poisson sampling of the Gaussian mechanism only; use --accountant pld for other mechanisms")
            }
        case .selfComposed(let inner, let count):
            return try rdp(of: inner, orders: orders).map { $0 * Double(count) }
        case .composed(let events):
            var total = Array(repeating: 0.0, count: orders.count)
            for e in events {
                let r = try rdp(of: e, orders: orders)
                for k in total.indices { total[k] += r[k] }
            }
            return total
        }
    }

    public func epsilon(delta: Double) throws -> Double {
        try epsilonAndOrder(delta: delta).epsilon
    }

    /// ε at δ and the order that attains it.
    public func epsilonAndOrder(delta: Double) throws -> (epsilon: Double, order: Double) {
        try PrivacyError.checkDelta(delta)
        return Self.epsilon(orders: orders, rdp: rdp, delta: delta)
    }

    public func delta(epsilon: Double) throws -> Double {
        try deltaAndOrder(epsilon: epsilon).delta
    }

    /// δ at ε and the order that attains it.
    public func deltaAndOrder(epsilon: Double) throws -> (delta: Double, order: Double) {
        try PrivacyError.checkEpsilon(epsilon)
        return Self.delta(orders: orders, rdp: rdp, epsilon: epsilon)
    }

    /// RDP → (ε, δ): ε = min over α of r + log(1 − 1/α) − log(δα)/(α − 1), clamped at 0.
    static func epsilon(orders: [Double], rdp: [Double], delta: Double) -> (epsilon: Double, order: Double) {
        var best = Double.infinity, bestOrder = orders[0]
        for (a, r) in zip(orders, rdp) {
            let eps: Double
            if r.isNaN {
                continue
            } else if delta * delta + expm1(-r) > 0 {
                eps = 0  // KL bound: δ ≤ sqrt(1 − e^−r) already
            } else if a > 1.01 {
                eps = r + log1p(-1 / a) - log(delta * a) / (a - 1)
            } else {
                eps = .infinity
            }
            if eps < best { best = eps; bestOrder = a }
        }
        return (max(0, best), bestOrder)
    }

    /// RDP → δ at ε: the smaller of the KL bound and the CKS bound, minimised over orders.
    static func delta(orders: [Double], rdp: [Double], epsilon: Double) -> (delta: Double, order: Double) {
        var bestLog = Double.infinity, bestOrder = orders[0]
        for (a, r) in zip(orders, rdp) {
            if r.isNaN { continue }
            var logDelta = r == 0 ? -Double.infinity : 0.5 * log1p(-exp(-r))
            if a > 1.01 {
                let bound = (a - 1) * (r - epsilon + log1p(-1 / a)) - log(a)
                logDelta = min(logDelta, bound)
            }
            if logDelta < bestLog { bestLog = logDelta; bestOrder = a }
        }
        return (min(exp(bestLog), 1), bestOrder)
    }
}
