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

/// A strategy as a plan or the command line names it: fedavg, fedavgm, fedadam, fedyogi,
/// fedadagrad, median, trimmed-mean[:β], krum[:f], multi-krum[:f], bulyan[:f]. Checked when it is
/// read, so a plan naming an unknown strategy is refused where it is parsed; it codes as its text,
/// so a plan's content hash is that of the words its author wrote.
public struct StrategyChoice: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median
        case trimmedMean = "trimmed-mean", krum, multiKrum = "multi-krum", bulyan
    }

    public let kind: Kind
    /// trimmed-mean's β (default 0.2).
    public let beta: Double?
    /// krum's, multi-krum's and bulyan's f (default: the number of Byzantine silos assumed, at least 1).
    public let byzantine: Int?
    /// The words as written (what the plan's hash covers).
    public let text: String

    public static let fedavg = StrategyChoice(kind: .fedavg, beta: nil, byzantine: nil, text: "fedavg")
    public static let names = "fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, trimmed-mean[:β], krum[:f], multi-krum[:f] or bulyan[:f]"

    private init(kind: Kind, beta: Double?, byzantine: Int?, text: String) {
        (self.kind, self.beta, self.byzantine, self.text) = (kind, beta, byzantine, text)
    }

    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let kind = Kind(rawValue: parts[0]) else { throw AggregationError("strategy '\(text)' is not \(Self.names)") }
        let argument = parts.count == 2 ? parts[1] : nil
        switch kind {
        case .trimmedMean:
            guard let beta = argument.map({ Double($0) }) ?? 0.2, beta >= 0, beta < 0.5 else {
                throw AggregationError("strategy '\(text)': β must be a number in [0, 0.5)")
            }
            self.init(kind: kind, beta: argument == nil ? nil : beta, byzantine: nil, text: text)
        case .krum, .multiKrum, .bulyan:
            let f = try argument.map { a in
                guard let v = Int(a), v >= 0 else { throw AggregationError("strategy '\(text)': f must be a non-negative integer") }
                return v
            }
            self.init(kind: kind, beta: nil, byzantine: f, text: text)
        default:
            guard argument == nil else { throw AggregationError("strategy '\(text)': \(kind.rawValue) takes no argument; it is not \(Self.names)") }
            self.init(kind: kind, beta: nil, byzantine: nil, text: text)
        }
    }

    public var description: String { text }

    /// FedAvg's weighted mean: the only strategy whose updates may be folded as they arrive, or
    /// summed under secure aggregation (every other one needs each update in the clear).
    public var isFedAvg: Bool { kind == .fedavg }

    /// The strategy itself; `assumedByzantine` is f where the choice does not give it.
    public func make(assumedByzantine: Int = 0) throws -> AnyAggregationStrategy {
        let f = byzantine ?? max(1, assumedByzantine)
        switch kind {
        case .fedavg: return AnyAggregationStrategy(FedAvg())
        case .fedavgm: return AnyAggregationStrategy(FedAvgM())
        case .fedadam: return AnyAggregationStrategy(FedAdaptive(rule: .adam))
        case .fedyogi: return AnyAggregationStrategy(FedAdaptive(rule: .yogi))
        case .fedadagrad: return AnyAggregationStrategy(FedAdaptive(rule: .adagrad))
        case .median: return AnyAggregationStrategy(CoordinateMedian())
        case .trimmedMean: return AnyAggregationStrategy(try TrimmedMean(beta: beta ?? 0.2))
        case .krum: return AnyAggregationStrategy(try MultiKrum(byzantine: f, selected: 1))
        case .multiKrum: return AnyAggregationStrategy(try MultiKrum(byzantine: f))
        case .bulyan: return AnyAggregationStrategy(try Bulyan(byzantine: f))
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(error)"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Builds a strategy from its command-line name (`StrategyChoice`); `f` defaults to `byzantine`.
public func makeStrategy(_ text: String, byzantine: Int) throws -> AnyAggregationStrategy {
    try StrategyChoice(parsing: text).make(assumedByzantine: byzantine)
}
