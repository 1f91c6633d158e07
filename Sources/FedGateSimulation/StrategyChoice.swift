import FedGateAggregation

/// A type-erased strategy, so options can compose wrappers around whichever strategy was chosen.
public struct AnyAggregationStrategy: AggregationStrategy {
    public var base: any AggregationStrategy
    public init(_ base: any AggregationStrategy) { self.base = base }
    public var name: String { base.name }
    public var maximumHeldUpdates: Int? { base.maximumHeldUpdates }
    public mutating func aggregate(global: [Float], updates: [ClientUpdate]) throws -> AggregationOutcome {
        var b = base
        defer { base = b }
        return try b.aggregate(global: global, updates: updates)
    }
}

/// Builds a strategy from its command-line name: fedavg, fedavgm, fedadam, fedyogi, fedadagrad,
/// median, trimmed-mean[:β], krum[:f], multi-krum[:f], bulyan[:f]. `f` defaults to `byzantine`.
public func makeStrategy(_ text: String, byzantine: Int) throws -> AnyAggregationStrategy {
    let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
    let arg = parts.count == 2 ? parts[1] : nil
    func f() throws -> Int {
        guard let a = arg else { return max(1, byzantine) }
        guard let v = Int(a), v >= 0 else { throw AggregationError("strategy '\(text)': f must be a non-negative integer") }
        return v
    }
    switch parts[0] {
    case "fedavg" where arg == nil: return AnyAggregationStrategy(FedAvg())
    case "fedavgm" where arg == nil: return AnyAggregationStrategy(FedAvgM())
    case "fedadam" where arg == nil: return AnyAggregationStrategy(FedAdaptive(rule: .adam))
    case "fedyogi" where arg == nil: return AnyAggregationStrategy(FedAdaptive(rule: .yogi))
    case "fedadagrad" where arg == nil: return AnyAggregationStrategy(FedAdaptive(rule: .adagrad))
    case "median" where arg == nil: return AnyAggregationStrategy(CoordinateMedian())
    case "trimmed-mean":
        guard let beta = arg.map({ Double($0) }) ?? 0.2 else { throw AggregationError("strategy '\(text)': β must be a number in [0, 0.5)") }
        return AnyAggregationStrategy(try TrimmedMean(beta: beta))
    case "krum": return AnyAggregationStrategy(try MultiKrum(byzantine: try f(), selected: 1))
    case "multi-krum": return AnyAggregationStrategy(try MultiKrum(byzantine: try f()))
    case "bulyan": return AnyAggregationStrategy(try Bulyan(byzantine: try f()))
    default:
        throw AggregationError("strategy '\(text)' is not fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, trimmed-mean[:β], krum[:f], multi-krum[:f] or bulyan[:f]")
    }
}
