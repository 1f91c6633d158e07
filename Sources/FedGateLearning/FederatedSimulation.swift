import FedGatePrivacy
import FedGateTensors

/// Combines the silos' locally trained parameters into the next global model. FedAvg is the
/// default; the aggregation issue adds robust strategies behind the same protocol.
public protocol ServerAggregator: Sendable {
    func aggregate(global: [Float], updates: [LocalUpdate]) throws -> [Float]
}

/// FedAvg (McMahan et al. 2017): the average of the silos' parameters weighted by example counts.
public struct FedAvg: ServerAggregator {
    public init() {}
    public func aggregate(global: [Float], updates: [LocalUpdate]) throws -> [Float] {
        let total = Float(updates.reduce(0) { $0 + $1.examples })
        var next = [Float](repeating: 0, count: global.count)
        for u in updates { VectorMath.axpy(Float(u.examples) / total, u.parameters, &next) }
        return next
    }
}

/// A whole federation in one process: each silo trains on its own shard; the server aggregates.
public struct FederatedSimulation: Sendable {
    public struct Settings: Sendable {
        public var silos = 3
        public var partitioning: Partitioning = .iid
        public var model: ModelKind = .logistic
        public var rounds = 20
        public var local = LocalTrainingSettings()
        /// SCAFFOLD control variates (Karimireddy et al. 2020); needs plain SGD.
        public var scaffold = false
        public var seed: UInt64 = 0
        /// δ at which ε is reported.
        public var delta = 1e-5
        /// Share of each silo's rows held out for evaluation.
        public var testFraction = 0.2
        public init() {}
    }

    /// One line of the live view.
    public struct RoundRecord: Sendable, Codable {
        public let round: Int
        public let accuracy: Double
        public let logLoss: Double
        public let auc: Double
        public let trainLoss: Double
        /// ε spent so far by each silo at `delta` (empty without DP).
        public let epsilonPerSilo: [Double]
    }

    public struct Result: Sendable {
        public let history: [RoundRecord]
        /// Pooled over every silo's held-out rows.
        public let final: ClassificationMetrics
        public let perSilo: [ClassificationMetrics]
        public let siloSizes: [Int]
        public let eventsPerSilo: [DPEvent]
        public let epsilonPerSilo: [Double]
        public let model: Network
    }

    public let settings: Settings
    public let data: Dataset
    public let aggregator: any ServerAggregator

    public init(data: Dataset, settings: Settings, aggregator: any ServerAggregator = FedAvg()) throws {
        guard settings.rounds >= 1 else { throw DatasetError(file: nil, line: nil, reason: "--rounds must be ≥ 1") }
        guard settings.local.epochs >= 1, settings.local.batchSize >= 1, settings.local.learningRate > 0 else {
            throw DatasetError(file: nil, line: nil, reason: "local epochs, batch size and learning rate must be positive")
        }
        if settings.scaffold && settings.local.optimizer != .sgd {
            throw DatasetError(file: nil, line: nil, reason: "SCAFFOLD's control variates assume plain SGD; drop --adam")
        }
        self.data = data
        self.settings = settings
        self.aggregator = aggregator
    }

    public func run(onRound: (RoundRecord) -> Void = { _ in }) throws -> Result {
        let parts = try settings.partitioning.split(data, silos: settings.silos, seed: settings.seed)
        var rng = SimulationRandom(seed: settings.seed ^ 0x5eed)
        var trains: [Dataset] = [], tests: [Dataset] = []
        for rows in parts {
            let shuffled = rows.shuffled(using: &rng)
            let testCount = max(1, Int(Double(rows.count) * settings.testFraction))
            trains.append(data.subset(Array(shuffled.dropFirst(testCount))))
            tests.append(data.subset(Array(shuffled.prefix(testCount))))
        }
        // Each silo computes the moments of its training rows; the consortium combines them so every
        // silo standardises the same way (per-silo statistics would shift features with the label
        // skew). Only these aggregates leave a silo; they are not DP-accounted.
        let stats = Standardisation(combining: trains.map(Standardisation.Moments.init(of:)))
        for s in trains.indices { trains[s].standardise(stats); tests[s].standardise(stats) }
        var global = try Network(kind: settings.model, inputs: data.featureCount, classes: data.classCount, seed: settings.seed)
        let trainer = LocalTrainer(settings: settings.local)
        var serverControl = [Float](repeating: 0, count: global.parameters.count)
        var clientControls = [[Float]](repeating: serverControl, count: settings.silos)
        var events = [[DPEvent]](repeating: [], count: settings.silos)
        var history: [RoundRecord] = []

        for round in 1...settings.rounds {
            var updates: [LocalUpdate] = []
            for s in 0..<settings.silos {
                var scaffold: LocalTrainer.Scaffold? = settings.scaffold ? .init(server: serverControl, client: clientControls[s]) : nil
                let update = try trainer.train(global, on: trains[s], scaffold: &scaffold, shuffle: &rng)
                if let sc = scaffold { clientControls[s] = sc.client }
                if update.event != .noOp { events[s].append(update.event) }
                updates.append(update)
            }
            global.parameters = try aggregator.aggregate(global: global.parameters, updates: updates)
            if settings.scaffold {
                // c ← c + (1/N)·Σ Δcᵢ (every silo takes part in every round here).
                for u in updates { VectorMath.axpy(1 / Float(settings.silos), u.controlDelta!, &serverControl) }
            }
            let pooled = evaluate(global, tests)
            let eps = try events.map { $0.isEmpty ? 0 : try epsilon(of: .composed($0), delta: settings.delta) }
            let record = RoundRecord(round: round, accuracy: pooled.accuracy, logLoss: pooled.logLoss, auc: pooled.auc,
                                     trainLoss: Double(updates.map(\.meanLoss).reduce(0, +)) / Double(updates.count),
                                     epsilonPerSilo: settings.local.dp == nil ? [] : eps)
            history.append(record)
            onRound(record)
        }
        let siloEvents = events.map { DPEvent.composed($0).simplified }
        return Result(history: history, final: evaluate(global, tests), perSilo: tests.map { global.evaluate($0) },
                      siloSizes: trains.map(\.count), eventsPerSilo: siloEvents,
                      epsilonPerSilo: try siloEvents.map { $0 == .noOp ? 0 : try epsilon(of: $0, delta: settings.delta) },
                      model: global)
    }

    private func evaluate(_ net: Network, _ tests: [Dataset]) -> ClassificationMetrics {
        var ws = Network.Workspace(net)
        var probs: [[Float]] = [], labels: [Int] = []
        for t in tests {
            for i in 0..<t.count { probs.append(net.forward(t.row(i), &ws)); labels.append(t.labels[i]) }
        }
        return ClassificationMetrics(probabilities: probs, labels: labels, classCount: data.classCount)
    }
}
