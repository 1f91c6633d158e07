import FedGateAggregation
import FedGateLearning
import FedGatePrivacy
import FedGateTensors

/// A whole federation in one process: each silo trains on its own shard, optionally compresses or
/// (if Byzantine) corrupts its update, the server validates and aggregates with the chosen strategy.
public struct FederatedSimulation: Sendable {
    public struct Settings: Sendable {
        public var silos = 3
        public var partitioning: Partitioning = .iid
        public var model: ModelKind = .logistic
        public var rounds = 20
        public var local = LocalTrainingSettings()
        /// The server's strategy (FedAvg by default), wrapped in validation.
        public var strategy = AnyAggregationStrategy(FedAvg())
        /// SCAFFOLD control variates (Karimireddy et al. 2020); needs plain SGD and FedAvg.
        public var scaffold = false
        /// The first `byzantineCount` silos attack.
        public var byzantineCount = 0
        public var attack: ByzantineAttack = .signFlip(scale: 10)
        /// `fp16`, `q8` or `topk:F`; nil sends raw float32.
        public var compression: String?
        /// Updates with a larger L2 norm are refused by validation.
        public var maximumUpdateNorm: Double?
        public var seed: UInt64 = 0
        /// δ at which ε is reported.
        public var delta = 1e-5
        /// Share of each silo's rows held out for evaluation.
        public var testFraction = 0.2
        /// Tests only: repeatable DP noise, no privacy (see `RepeatableNoise`).
        public var fixedNoiseSeed: UInt64?
        /// How each silo releases its feature statistics (as a networked plan's `statistics:`);
        /// nil: the simulator standardises with the exact statistics, which no networked plan does.
        public var statistics: StatisticsRelease?
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
        /// Silos a robust strategy excluded this round.
        public let excluded: [String]
        /// Updates refused by validation, explained.
        public let rejected: [UpdateRejection]
        /// Bytes each silo sent this round.
        public let bytesPerSilo: Int
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
        public let attackers: [String]
        /// Share of (attacker, round) pairs in which the strategy excluded the attacker; nil when the
        /// strategy excludes no one by design (median, trimmed mean, FedAvg).
        public let detectionRate: Double?
        public let uncompressedBytesPerSilo: Int
        /// Under the backdoor attack: the share of held-out rows of other classes that the final
        /// model, shown the trigger, puts in the attacker's class (nil without that attack).
        public let backdoorSuccess: Double?
    }

    public let settings: Settings
    public let data: Dataset

    public init(data: Dataset, settings: Settings) throws {
        guard settings.rounds >= 1 else { throw DatasetError(file: nil, line: nil, reason: "--rounds must be ≥ 1") }
        guard settings.local.epochs >= 1, settings.local.batchSize >= 1, settings.local.learningRate > 0 else {
            throw DatasetError(file: nil, line: nil, reason: "local epochs, batch size and learning rate must be positive")
        }
        if settings.scaffold && settings.local.optimizer != .sgd {
            throw DatasetError(file: nil, line: nil, reason: "SCAFFOLD's control variates assume plain SGD; drop --adam")
        }
        if settings.scaffold && settings.strategy.name != "fedavg" {
            throw DatasetError(file: nil, line: nil, reason: "SCAFFOLD has its own server rule; use it with --strategy fedavg")
        }
        guard settings.byzantineCount >= 0, settings.byzantineCount < settings.silos else {
            throw DatasetError(file: nil, line: nil, reason: "byzantine silos must number fewer than the \(settings.silos) silos")
        }
        if let c = settings.compression { _ = try makeCodec(c) }
        self.data = data
        self.settings = settings
    }

    /// Each silo's training and held-out rows, raw (before standardisation): what a networked
    /// run gives its gateways to compare with this simulation.
    public func shards() throws -> [(train: Dataset, test: Dataset)] {
        var rng = SimulationRandom(seed: settings.seed ^ 0x5eed)
        return try shards(rng: &rng)
    }

    private func shards(rng: inout SimulationRandom) throws -> [(train: Dataset, test: Dataset)] {
        try settings.partitioning.split(data, silos: settings.silos, seed: settings.seed).map { rows in
            let shuffled = rows.shuffled(using: &rng)
            let testCount = max(1, Int(Double(rows.count) * settings.testFraction))
            return (data.subset(Array(shuffled.dropFirst(testCount))), data.subset(Array(shuffled.prefix(testCount))))
        }
    }

    public func run(onRound: (RoundRecord) -> Void = { _ in }) throws -> Result {
        var rng = SimulationRandom(seed: settings.seed ^ 0x5eed)
        let shards = try shards(rng: &rng)
        var trains = shards.map(\.train), tests = shards.map(\.test)
        var events = [[DPEvent]](repeating: [], count: settings.silos)
        let (stats, weights) = try standardisation(trains, events: &events)
        for s in trains.indices { trains[s].standardise(stats); tests[s].standardise(stats) }
        let names = (0..<settings.silos).map { "silo-\($0)" }
        let attackers = Array(names.prefix(settings.byzantineCount))
        for s in 0..<settings.byzantineCount { trains[s] = settings.attack.poison(trains[s], rng: &rng) }

        var global = try Network(kind: settings.model, inputs: data.featureCount, classes: data.classCount, seed: settings.seed)
        let dimension = global.parameters.count
        let trainer = LocalTrainer(settings: settings.local)
        var strategy = Validated(settings.strategy, validator: UpdateValidator(
            dimension: dimension, maximumNorm: settings.maximumUpdateNorm, maximumExamples: data.count))
        var scaffoldServer = ScaffoldServer(dimension: dimension, totalSilos: settings.silos)
        var clientControls = [[Float]](repeating: [Float](repeating: 0, count: dimension), count: settings.silos)
        var codecs = try (0..<settings.silos).map { _ in try settings.compression.map(makeCodec) }
        var history: [RoundRecord] = []
        var detections = 0

        for round in 1...settings.rounds {
            var updates: [ClientUpdate] = [], controlDeltas: [[Float]] = [], losses: [Float] = []
            var bytes = 0
            for s in 0..<settings.silos {
                let (update, local, wire) = try siloUpdate(s, name: names[s], round: round, global: global, train: trains[s], trainer: trainer,
                                                           scaffoldControl: scaffoldServer.control, clientControl: &clientControls[s],
                                                           codec: &codecs[s], rng: &rng)
                if let d = local.controlDelta { controlDeltas.append(d) }
                if local.event != .noOp { events[s].append(local.event) }
                losses.append(local.meanLoss)
                bytes = max(bytes, wire)
                updates.append(weights.map { ClientUpdate(silo: update.silo, delta: update.delta, examples: $0[s]) } ?? update)
            }
            let outcome = try aggregate(updates, controlDeltas: controlDeltas, global: global, strategy: &strategy, scaffold: &scaffoldServer)
            global.parameters = outcome.parameters
            detections += attackers.filter { a in outcome.excluded.contains(a) || outcome.rejected.contains { $0.silo == a } }.count
            let pooled = evaluate(global, tests)
            let eps = try events.map { $0.isEmpty ? 0 : try epsilon(of: .composed($0), delta: settings.delta) }
            let record = RoundRecord(round: round, accuracy: pooled.accuracy, logLoss: pooled.logLoss, auc: pooled.auc,
                                     trainLoss: Double(losses.reduce(0, +)) / Double(losses.count),
                                     epsilonPerSilo: settings.local.dp == nil ? [] : eps,
                                     excluded: outcome.excluded, rejected: outcome.rejected, bytesPerSilo: bytes)
            history.append(record)
            onRound(record)
        }
        let siloEvents = events.map { DPEvent.composed($0).simplified }
        let excludes = history.contains { !$0.excluded.isEmpty } || ["krum", "multi-krum", "bulyan"].contains(settings.strategy.name)
        return Result(history: history, final: evaluate(global, tests), perSilo: tests.map { global.evaluate($0) },
                      siloSizes: trains.map(\.count), eventsPerSilo: siloEvents,
                      epsilonPerSilo: try siloEvents.map { $0 == .noOp ? 0 : try epsilon(of: $0, delta: settings.delta) },
                      model: global, attackers: attackers,
                      detectionRate: attackers.isEmpty || !excludes ? nil : Double(detections) / Double(attackers.count * settings.rounds),
                      uncompressedBytesPerSilo: 4 * dimension,
                      backdoorSuccess: settings.byzantineCount > 0 && settings.attack == .backdoor
                          ? BackdoorTrigger.standard(featureCount: data.featureCount).successRate(of: global, on: tests) : nil)
    }

    /// The consortium standardises every silo the same way (per-silo statistics would shift
    /// features with the label skew): from each silo's statistics release as a networked plan does
    /// (a DP event per silo), or from the exact moments when no release is set. With releases, each
    /// silo's weight in FedAvg is its released row count, rounded, at least 1, as a gateway sends it.
    private func standardisation(_ trains: [Dataset], events: inout [[DPEvent]]) throws -> (Standardisation, weights: [Int]?) {
        guard let release = settings.statistics else { return (try Standardisation(combining: trains.map(Standardisation.Moments.init(of:))), nil) }
        var parts: [ReleasedStatistics] = []
        for s in trains.indices {
            var noise = settings.fixedNoiseSeed.map { RepeatableNoise(run: $0, silo: s, round: 0).noise } ?? GaussianNoiseGenerator()
            events[s].append(release.event)
            parts.append(release.release(trains[s], noise: &noise))
        }
        return (try release.standardisation(combining: parts), parts.map { Int(max(1, $0.count.rounded())) })
    }

    /// One silo's update in a round: trained locally (with its SCAFFOLD control and the run's fixed
    /// noise if asked), corrupted if the silo is Byzantine, and sent through its codec; the bytes it
    /// would send.
    private func siloUpdate(_ s: Int, name: String, round: Int, global: Network, train: Dataset, trainer: LocalTrainer,
                            scaffoldControl: [Float], clientControl: inout [Float], codec: inout (any UpdateCodec)?,
                            rng: inout SimulationRandom) throws -> (ClientUpdate, LocalUpdate, Int) {
        var scaffold: LocalTrainer.Scaffold? = settings.scaffold ? .init(server: scaffoldControl, client: clientControl) : nil
        var siloTrainer = trainer
        if let run = settings.fixedNoiseSeed {
            siloTrainer = LocalTrainer(settings: { var l = settings.local; l.repeatableNoise = RepeatableNoise(run: run, silo: s, round: round); return l }())
        }
        let local = try siloTrainer.train(global, on: train, scaffold: &scaffold, shuffle: &rng)
        if let sc = scaffold { clientControl = sc.client }
        let dimension = global.parameters.count
        var delta = local.parameters
        for k in 0..<dimension { delta[k] -= global.parameters[k] }
        if s < settings.byzantineCount { delta = settings.attack.corrupt(delta, rng: &rng) }
        var bytes = 4 * dimension
        if codec != nil {
            let wire = codec!.encode(delta)
            bytes = wire.count
            delta = try codec!.decode(wire, dimension: dimension)
        }
        return (ClientUpdate(silo: name, delta: delta, examples: local.examples), local, bytes)
    }

    /// The round's aggregate: SCAFFOLD's server step over the validated updates, or the strategy's.
    private func aggregate(_ updates: [ClientUpdate], controlDeltas: [[Float]], global: Network,
                           strategy: inout Validated<AnyAggregationStrategy>, scaffold: inout ScaffoldServer) throws -> AggregationOutcome {
        guard settings.scaffold else { return try strategy.aggregate(global: global.parameters, updates: updates) }
        let (accepted, rejected) = strategy.validator.validate(updates)
        return AggregationOutcome(parameters: try scaffold.aggregate(global: global.parameters, updates: accepted, controlDeltas: controlDeltas),
                                  rejected: rejected)
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
