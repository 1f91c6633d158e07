import FedGateLearning

/// What a Byzantine silo does in the simulator, to prove the defences.
public enum ByzantineAttack: Sendable, Equatable, CustomStringConvertible {
    /// Sends −X times its honest update.
    case signFlip(scale: Float)
    /// Sends X times its honest update.
    case scale(Float)
    /// Sends N(0, S²) noise instead of an update.
    case gaussian(Float)
    /// Trains on labels mapped y → C − 1 − y.
    case labelFlip
    /// Trains with a trigger (the first four features set to 4) stamped on half its rows, labelled 0.
    case backdoor

    public var description: String {
        switch self {
        case .signFlip(let x): "sign-flip:\(x)"
        case .scale(let x): "scale:\(x)"
        case .gaussian(let s): "gaussian:\(s)"
        case .labelFlip: "label-flip"
        case .backdoor: "backdoor"
        }
    }

    /// Parses `K:sign-flip[:X]`, `K:scale:X`, `K:gaussian:S`, `K:label-flip` or `K:backdoor`.
    public static func parse(_ text: String) throws -> (count: Int, attack: ByzantineAttack) {
        let parts = text.split(separator: ":").map(String.init)
        func fail() -> DatasetError {
            DatasetError(file: nil, line: nil, reason: "byzantine '\(text)' is not K:sign-flip[:X], K:scale:X, K:gaussian:S, K:label-flip or K:backdoor")
        }
        guard parts.count >= 2, let k = Int(parts[0]), k >= 0 else { throw fail() }
        let value = parts.count == 3 ? Float(parts[2]) : nil
        if parts.count == 3 { guard let v = value, v.isFinite, v > 0 else { throw fail() } }
        switch (parts[1], parts.count) {
        case ("sign-flip", 2): return (k, .signFlip(scale: 10))
        case ("sign-flip", 3): return (k, .signFlip(scale: value!))
        case ("scale", 3): return (k, .scale(value!))
        case ("gaussian", 3): return (k, .gaussian(value!))
        case ("label-flip", 2): return (k, .labelFlip)
        case ("backdoor", 2): return (k, .backdoor)
        default: throw fail()
        }
    }

    /// The data an attacking silo trains on.
    func poison(_ data: Dataset, rng: inout SimulationRandom) -> Dataset {
        switch self {
        case .labelFlip:
            return (try? Dataset(featureNames: data.featureNames, labelName: data.labelName, features: data.features,
                                 labels: data.labels.map { data.classCount - 1 - $0 }, classCount: data.classCount)) ?? data
        case .backdoor:
            let picks = (0..<data.count).map { _ in rng.uniform() < 0.5 }
            return BackdoorTrigger.standard(featureCount: data.featureCount).poison(data) { picks[$0] }
        default:
            return data
        }
    }

    /// The update an attacking silo sends in place of its honest one.
    func corrupt(_ delta: [Float], rng: inout SimulationRandom) -> [Float] {
        switch self {
        case .signFlip(let x): return delta.map { -x * $0 }
        case .scale(let x): return delta.map { x * $0 }
        case .gaussian(let s): return delta.map { _ in Float(rng.normal()) * s }
        case .labelFlip, .backdoor: return delta
        }
    }
}
