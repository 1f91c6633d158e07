import Crypto
import FedGateAggregation
import FedGateData
import FedGateLearning
import FedGatePrivacy
import Foundation
import Yams

/// A data scientist's request: what to train, on which data, for what purpose, with what privacy.
public struct TrainingPlan: Sendable, Equatable, Codable {
    public struct DP: Sendable, Equatable, Codable {
        public var noiseMultiplier: Double?
        public var targetEpsilon: Double?
        public var clipNorm: Double
        public var samplingRate: Double
        public var delta: Double
        /// With secure aggregation: the discrete Gaussian noise the silos add together before
        /// masking, as a multiple of the update clip norm (default 1.0).
        public var distributedNoiseMultiplier: Double? = nil
        /// `noise: discrete`: each DP-SGD step's noisy sum released on a grid with the discrete
        /// Gaussian (the defence against floating-point attacks); nil: floating-point Gaussian noise.
        public var discreteNoise: Bool? = nil
    }

    public var purpose: String
    public var datasets: [String]
    public var columns: [String]
    public var model: String
    public var executor: PlanExecutor
    public var rounds: Int
    public var localSteps: Int
    public var strategy: StrategyChoice
    public var dp: DP
    public var secureAggregation: Bool
    public var quorum: Int
    public var brokerRegion: String
    public var brokerJurisdiction: String
    public var roundDeadlineSeconds: Int
    public var minAccuracy: Double?
    /// How far (accuracy, 0.01 = one point) the final model may fall below the current version.
    public var maxAccuracyDrop: Double? = nil
    /// FedPer: weight layers (0 = next to the inputs) that stay at each silo, never aggregated.
    public var localLayers: [Int]? = nil
    /// Epochs of local fine-tuning (plain SGD; the model stays at the silo) before the personalised
    /// evaluation after the last round.
    public var fineTuneEpochs: Int? = nil
    /// How long the plan waits for approvals at silos that require a person's (`deadlines.approval_seconds`);
    /// nil: `defaultApprovalWaitSeconds`. Absent from the content hash when not given.
    public var approvalWaitSeconds: Int? = nil
    public static let defaultApprovalWaitSeconds = 3 * 86_400
    /// What the rows are (`schema:`): types, missing-value rules, bounds and the target. Absent from
    /// the content hash when not given (plans without one read numeric columns and an integer label).
    public var schema: DataSchema? = nil
    /// How each silo releases its feature statistics with DP (`statistics:`). Absent from the
    /// content hash when not given; a plan without it is refused when submitted.
    public var statistics: Statistics? = nil
    /// A regression plan's gate (`evaluation.max_rmse`, `evaluation.min_r2`), in the target's units.
    public var maxRMSE: Double? = nil
    public var minR2: Double? = nil
    /// Schema columns (categorical or boolean) whose cells each silo evaluates the final model on
    /// (`slices:`), and the largest accuracy gap between cells the gate allows (`evaluation.max_slice_gap`).
    public var slices: [String]? = nil
    public var maxSliceGap: Double? = nil
    /// FedProx's proximal coefficient μ for each silo's local training (`fedprox:`); absent from the
    /// content hash when not given (plain local DP-SGD).
    public var fedprox: Double? = nil
    /// SCAFFOLD (`scaffold: true`): the round's model file carries the server's control variate and
    /// each silo corrects its local steps by it and its own; nil when not asked (absent from the
    /// content hash then).
    public var scaffold: Bool? = nil
    /// How updates travel (`compression: fp16 | q8 | topk:FRACTION`), encoded at the silo after its DP
    /// (post-processing: no privacy cost) and decoded by the broker; absent: float32. Absent from the
    /// content hash when not given.
    public var compression: String? = nil
    /// Client sampling (`sampling: { fraction: F, min: K }` or `{ count: K }`): how many of the
    /// eligible silos each round offers; nil: all of them. Absent from the content hash when not given.
    public var sampling: Sampling? = nil
    public struct Sampling: Sendable, Equatable, Codable {
        public var fraction: Double?
        public var count: Int?
        /// The floor under a fraction (the plan's quorum when not given).
        public var min: Int?
    }

    /// An evaluation plan (`kind: evaluate`): the registry version it scores at every silo, training
    /// nothing; nil for a training plan. Absent from the content hash of a training plan.
    public var evaluates: Int? = nil
    /// A statistics plan's histograms and least cell size (`kind: statistics`); nil for other kinds.
    /// Absent from the content hash of other kinds.
    public var analytics: Analytics? = nil

    /// Whether the plan scores a registry version instead of training.
    public var isEvaluation: Bool { evaluates != nil }

    /// SHA-256 of the plan's canonical JSON form (sorted keys), so equal plans hash equally
    /// whatever their YAML layout or comments.
    public var contentHash: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(self)) ?? Data()
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// Total DP-SGD steps a silo runs under this plan.
    public var totalSteps: Int { rounds * localSteps }

    /// The noise multiplier the plan will use: given, or calibrated so that its statistics release
    /// and its DP-SGD steps together spend at most its target ε.
    public func noiseMultiplier() throws -> Double {
        if let z = dp.noiseMultiplier { return z }
        guard let target = dp.targetEpsilon else {
            throw PrivacyError(field: "dp", reason: isEvaluation ? "an evaluation plan runs no DP-SGD" : "gives neither noise_multiplier nor target_epsilon")
        }
        // The target is the plan's whole spend at a silo: its statistics release and every step.
        return try NoiseCalibration.noiseMultiplier(targetEpsilon: target, delta: dp.delta,
                                                    samplingProbability: dp.samplingRate, steps: totalSteps, prior: statisticsEvent ?? .noOp)
    }

    /// The privacy a silo will spend, as DP events, before any training: its statistics release
    /// and every round.
    public func projectedEvent() throws -> DPEvent { try spent(rounds: rounds) }

    /// What a silo has spent after taking part in `k` rounds: the statistics release (when the
    /// plan has one and k > 0) and the rounds' events.
    public func spent(rounds k: Int) throws -> DPEvent {
        guard k > 0, let statisticsEvent else { return try event(rounds: k) }
        return .composed([statisticsEvent, try event(rounds: k)])
    }

    /// What `k` rounds cost a silo: one DP-SGD run of k × local steps for the built-in trainer,
    /// k releases of the Gaussian mechanism for a silo's own program.
    public func event(rounds k: Int) throws -> DPEvent {
        if executor == .builtin { return .dpsgd(samplingProbability: dp.samplingRate, noiseMultiplier: try noiseMultiplier(), steps: k * localSteps) }
        return .selfComposed(event: try roundEvent(), count: k)
    }

    /// What one round costs a silo. The built-in trainer runs DP-SGD. A silo's own program returns
    /// a whole update, which its gateway clips to `dp.clip_norm` and noises once with the Gaussian
    /// mechanism: adding or removing a record may move a clipped update anywhere in that ball, a
    /// change of up to twice the clip norm, so the mechanism counts at half the plan's multiplier.
    public func roundEvent() throws -> DPEvent {
        if executor == .builtin { return .dpsgd(samplingProbability: dp.samplingRate, noiseMultiplier: try noiseMultiplier(), steps: localSteps) }
        guard let z = dp.noiseMultiplier else {
            throw PlanUnsupportedByExecutor("dp.noise_multiplier: a plan for executor '\(executor)' must give it (target_epsilon calibrates DP-SGD only)")
        }
        return .gaussian(noiseMultiplier: z / 2)
    }

    public static func load(_ url: URL) throws -> TrainingPlan {
        try parse(try readPolicyFile(url), file: url.path)
    }

    /// Parses plan YAML; errors name file:line:column and the field.
    /// What a training plan may say.
    static let trainingKeys = ["kind", "purpose", "datasets", "columns", "model", "executor", "rounds", "local_steps", "strategy",
                               "dp", "secure_aggregation", "quorum", "broker", "deadlines", "evaluation", "personalisation", "schema", "statistics",
                               "slices", "fedprox", "compression", "sampling", "scaffold"]

    public static func parse(_ text: String, file: String) throws -> TrainingPlan {
        let r = YAMLReader(file: file)
        let root = try r.root(text)
        if let kind = root.optional("kind") {
            switch try r.string(kind, "kind") {
            case "evaluate": return try evaluationPlan(r, root)
            case "statistics": return try statisticsPlan(r, root)
            case "train": break
            case let other: throw r.error(kind, "kind", "'\(other.prefix(40))' is not a plan kind: train (the default), evaluate or statistics")
            }
        }
        try root.only(trainingKeys)
        let broker = try r.map(try root.require("broker", "region and jurisdiction of the broker"), "broker")
        try broker.only(["region", "jurisdiction"])
        let deadlines = try r.map(try root.require("deadlines", "round_seconds"), "deadlines")
        try deadlines.only(["round_seconds", "approval_seconds"])
        let gate = try root.optional("evaluation").map { try evaluationGate(r, $0) }
        let (minAccuracy, maxDrop) = (gate?.minAccuracy, gate?.maxDrop)
        let (localLayers, fineTune) = try root.optional("personalisation").map { try personalisation(r, $0) } ?? (nil, nil)
        let (model, strategy, executor) = try choices(r, root)
        let datasets = try r.distinctStrings(try root.require("datasets", "the logical names of the data sets"), "datasets")
        guard !datasets.isEmpty else { throw r.error(root.optional("datasets"), "datasets", "must name at least one data set") }
        let columns = try r.distinctStrings(try root.require("columns", "the columns the plan reads"), "columns")
        var plan = TrainingPlan(
            purpose: try r.string(try root.require("purpose", "why the model is trained, e.g. research"), "purpose"),
            datasets: datasets,
            columns: columns,
            model: model,
            executor: executor,
            rounds: try r.int(try root.require("rounds", "the number of rounds"), "rounds", 1...100_000, "a whole number from 1 to 100000"),
            localSteps: try r.int(try root.require("local_steps", "DP-SGD steps per silo per round"), "local_steps", 1...10_000_000, "a whole number ≥ 1"),
            strategy: strategy,
            dp: try dpSettings(r, root),
            secureAggregation: try r.bool(try root.require("secure_aggregation", "true or false"), "secure_aggregation"),
            quorum: try r.int(try root.require("quorum", "the fewest silos a round needs"), "quorum", 1...100_000, "a whole number ≥ 1"),
            brokerRegion: try r.string(try broker.require("region", "the broker's region"), "broker.region"),
            brokerJurisdiction: try r.string(try broker.require("jurisdiction", "the broker's jurisdiction"), "broker.jurisdiction"),
            roundDeadlineSeconds: try r.int(try deadlines.require("round_seconds", "seconds a round may take"), "deadlines.round_seconds", 1...86_400 * 7, "seconds from 1 to 604800"),
            minAccuracy: minAccuracy, maxAccuracyDrop: maxDrop, localLayers: localLayers, fineTuneEpochs: fineTune,
            approvalWaitSeconds: try deadlines.optional("approval_seconds").map {
                try r.int($0, "deadlines.approval_seconds", 1...86_400 * 30, "seconds from 1 to 2592000 (30 days) to wait for silos' approvals") })
        plan.schema = try root.optional("schema").map { try schema(r, $0, columns: columns) }
        plan.statistics = try root.optional("statistics").map { try statistics(r, $0, columns: columns, schema: plan.schema != nil) }
        (plan.maxRMSE, plan.minR2, plan.maxSliceGap) = (gate?.maxRMSE, gate?.minR2, gate?.maxSliceGap)
        plan.slices = try root.optional("slices").map { try sliceColumns(r, $0, schema: plan.schema) }
        if plan.maxSliceGap != nil, plan.slices == nil {
            throw r.error(root.optional("evaluation"), "evaluation.max_slice_gap", "needs the plan's slices (slices: [column, …])")
        }
        try readShape(r, root, into: &plan)
        if plan.maxRMSE != nil || plan.minR2 != nil, plan.schema?.target.task != .regression {
            throw r.error(root.optional("evaluation"), "evaluation", "max_rmse and min_r2 are for a regression target (schema.target.regression); use min_accuracy")
        }
        return plan
    }

    /// `dp`: a noise multiplier or a target ε (exactly one), the clipping norm, the sampling rate, δ.
    private static func dpSettings(_ r: YAMLReader, _ root: YAMLReader.Map) throws -> DP {
        let dpMap = try r.map(try root.require("dp", "noise_multiplier or target_epsilon, clip_norm, sampling_rate, delta"), "dp")
        try dpMap.only(["noise_multiplier", "target_epsilon", "clip_norm", "sampling_rate", "delta", "distributed_noise_multiplier", "noise"])
        let z = try dpMap.optional("noise_multiplier").map { try r.double($0, "dp.noise_multiplier", 0.01...1000, "a noise multiplier between 0.01 and 1000") }
        let target = try dpMap.optional("target_epsilon").map { try r.double($0, "dp.target_epsilon", 0.001...1000, "a target ε between 0.001 and 1000") }
        guard (z == nil) != (target == nil) else {
            throw r.error(dpMap.node, "dp", "give exactly one of noise_multiplier and target_epsilon")
        }
        var noise: Bool?
        if let node = dpMap.optional("noise") {
            switch try r.string(node, "dp.noise") {
            case "discrete": noise = true
            case "continuous": noise = nil
            case let other: throw r.error(node, "dp.noise", "must be discrete (on a grid, the defence against floating-point attacks) or continuous, not '\(other.prefix(40))'")
            }
        }
        return DP(noiseMultiplier: z, targetEpsilon: target,
                  clipNorm: try r.double(try dpMap.require("clip_norm", "the per-example clipping norm"), "dp.clip_norm", 1e-9...1e9, "a number > 0"),
                  samplingRate: try r.double(try dpMap.require("sampling_rate", "the Poisson sampling rate q"), "dp.sampling_rate", 1e-9...1, "a rate in (0, 1]"),
                  delta: try r.double(try dpMap.require("delta", "δ, e.g. 1e-5"), "dp.delta", 1e-300...0.5, "a δ in (0, 0.5]"),
                  distributedNoiseMultiplier: try dpMap.optional("distributed_noise_multiplier").map {
                      try r.double($0, "dp.distributed_noise_multiplier", 0.01...1000, "a noise multiplier between 0.01 and 1000") },
                  discreteNoise: noise)
    }

    /// The federation's shape beyond FedAvg of float32 updates: client sampling, FedProx, an update codec.
    private static func readShape(_ r: YAMLReader, _ root: YAMLReader.Map, into plan: inout TrainingPlan) throws {
        plan.sampling = try root.optional("sampling").map { try sampling(r, $0, quorum: plan.quorum) }
        plan.fedprox = try root.optional("fedprox").map { try r.double($0, "fedprox", 1e-6...100, "FedProx's μ, a number from 0.000001 to 100") }
        if let node = root.optional("scaffold"), try r.bool(node, "scaffold") {
            // The broker derives each silo's control-variate change from its update, which it sees
            // only in the clear, and SCAFFOLD's server step is FedAvg's.
            guard !plan.secureAggregation else {
                throw r.error(node, "scaffold", "needs each silo's update in the clear (its control variate's change is derived from it); secure aggregation masks it")
            }
            guard plan.strategy.isFedAvg else { throw r.error(node, "scaffold", "SCAFFOLD's server step is FedAvg's: use strategy: fedavg") }
            guard plan.executor == .builtin else { throw r.error(node, "scaffold", "the control variates are applied by the built-in trainer: use executor: builtin") }
            plan.scaffold = true
        }
        if let node = root.optional("compression") {
            let text = try r.string(node, "compression")
            do { _ = try makeCodec(text) } catch let e as AggregationError { throw r.error(node, "compression", e.reason) }
            guard !plan.secureAggregation else {
                throw r.error(node, "compression", "a codec works on updates in the clear; secure aggregation sends masked field elements (drop one of them)")
            }
            plan.compression = text
        }
    }
    /// `evaluation`: the gate's least accuracy and largest drop, or a regression's largest RMSE and least R².
    static func evaluationGate(_ r: YAMLReader, _ node: Yams.Node)
        throws -> (minAccuracy: Double?, maxDrop: Double?, maxRMSE: Double?, minR2: Double?, maxSliceGap: Double?) {
        let em = try r.map(node, "evaluation")
        try em.only(["min_accuracy", "max_drop", "max_rmse", "min_r2", "max_slice_gap"])
        return (try em.optional("min_accuracy").map { try r.double($0, "evaluation.min_accuracy", 0...1, "an accuracy between 0 and 1") },
                try em.optional("max_drop").map { try r.double($0, "evaluation.max_drop", 0...1, "an accuracy drop between 0 and 1 (0.01 is one point)") },
                try em.optional("max_rmse").map { try r.double($0, "evaluation.max_rmse", 0...1e300, "an RMSE ≥ 0 in the target's units") },
                try em.optional("min_r2").map { try r.double($0, "evaluation.min_r2", -1e300...1, "an R² at most 1") },
                try em.optional("max_slice_gap").map { try r.double($0, "evaluation.max_slice_gap", 0...1, "an accuracy gap between 0 and 1") })
    }

    /// `sampling`: a fraction of the eligible silos with a floor (at least the quorum), or a count.
    static func sampling(_ r: YAMLReader, _ node: Yams.Node, quorum: Int) throws -> Sampling {
        let m = try r.map(node, "sampling")
        try m.only(["fraction", "count", "min"])
        let fraction = try m.optional("fraction").map { try r.double($0, "sampling.fraction", 1e-6...1, "a fraction in (0, 1]") }
        let count = try m.optional("count").map { try r.int($0, "sampling.count", quorum...1_000_000, "a count of silos ≥ the quorum (\(quorum))") }
        let floor = try m.optional("min").map { try r.int($0, "sampling.min", quorum...1_000_000, "a floor of silos ≥ the quorum (\(quorum))") }
        guard (fraction == nil) != (count == nil) else { throw r.error(node, "sampling", "give exactly one of fraction and count") }
        if count != nil, floor != nil { throw r.error(m.optional("min"), "sampling.min", "is the floor under a fraction; a count is exact") }
        return Sampling(fraction: fraction, count: count, min: floor)
    }

    /// `slices`: schema columns with cells (categorical or boolean), each once; a classification target.
    static func sliceColumns(_ r: YAMLReader, _ node: Yams.Node, schema: DataSchema?) throws -> [String] {
        let names = try r.distinctStrings(node, "slices")
        guard let schema else { throw r.error(node, "slices", "needs the plan's schema: a slice is a categorical or boolean column of it") }
        guard schema.target.task != .regression else { throw r.error(node, "slices", "are evaluated by accuracy: a regression target has none") }
        for (i, name) in names.enumerated() {
            guard let column = schema.columns.first(where: { $0.name == name }) else {
                throw r.error(Array(node.sequence ?? [])[i], "slices[\(i)]", "'\(name)' is not a column of the plan's schema")
            }
            if case .numeric = column.kind {
                throw r.error(Array(node.sequence ?? [])[i], "slices[\(i)]", "'\(name)' is numeric; a slice is a categorical or boolean column (band a number into categories first)")
            }
        }
        return names
    }

    /// `personalisation`: the layers kept at each silo, and the fine-tuning epochs.
    private static func personalisation(_ r: YAMLReader, _ node: Yams.Node) throws -> ([Int]?, Int?) {
        let pm = try r.map(node, "personalisation")
        try pm.only(["local_layers", "fine_tune_epochs"])
        var localLayers: [Int]?
        if let l = pm.optional("local_layers") {
            let text = try r.distinctStrings(l, "personalisation.local_layers")
            localLayers = try text.map { t in
                guard let n = Int(t), n >= 0 else { throw r.error(l, "personalisation.local_layers", "must list layer numbers ≥ 0 (0: the layer next to the inputs)") }
                return n
            }
        }
        let fineTune = try pm.optional("fine_tune_epochs").map { try r.int($0, "personalisation.fine_tune_epochs", 0...1000, "a number of epochs from 0 to 1000") }
        return (localLayers, fineTune)
    }

    /// The enumerated choices, each refused where it is read with the ones there are: the model
    /// kind, the strategy (FedAvg when absent) and the executor (built-in when absent).
    private static func choices(_ r: YAMLReader, _ root: YAMLReader.Map) throws -> (String, StrategyChoice, PlanExecutor) {
        let modelNode = try root.require("model", "logistic, softmax or mlp:H")
        let model = try r.string(modelNode, "model")
        do { _ = try ModelKind(parsing: model) } catch let e as DatasetError { throw r.error(modelNode, "model", e.reason) }
        let strategy = try root.optional("strategy").map { node in
            do { return try StrategyChoice(parsing: try r.string(node, "strategy")) } catch let e as AggregationError { throw r.error(node, "strategy", e.reason) }
        } ?? .fedavg
        let executor = try root.optional("executor").map { node in
            do { return try PlanExecutor(parsing: try r.string(node, "executor")) } catch let e as PlanExecutor.Unusable { throw r.error(node, "executor", e.reason) }
        } ?? .builtin
        return (model, strategy, executor)
    }
}

/// A plan whose DP settings do not fit the executor it names.
public struct PlanUnsupportedByExecutor: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Who trains a plan at each silo: the gateway's built-in DP-SGD trainer, or a program the silo's
/// policy names under `programs:` (its own training code). Codes as its name, so a plan's content
/// hash is that of the words its author wrote.
public enum PlanExecutor: Sendable, Hashable, Codable, CustomStringConvertible {
    case builtin
    case program(String)

    public struct Unusable: Error, Sendable { public let reason: String }

    public init(parsing name: String) throws {
        if name == "builtin" { self = .builtin; return }
        guard (1...64).contains(name.utf8.count), name.utf8.allSatisfy({ (33...126).contains($0) }) else {
            throw Unusable(reason: "'builtin' or the name of a program in the silo's policy (1 to 64 printable characters, no spaces)")
        }
        self = .program(name)
    }

    public var description: String {
        switch self {
        case .builtin: "builtin"
        case .program(let name): name
        }
    }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: name) } catch let e as Unusable {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "executor: \(e.reason)"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
