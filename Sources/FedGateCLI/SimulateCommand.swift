import ArgumentParser
import FedGateAggregation
import FedGateLearning
import FedGateSimulation
import FedGatePrivacy
import Foundation

/// `fedgate simulate`: a whole federation in one process, to try a plan before deploying it.
struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run a federation of simulated silos on one machine (each trains on its own shard; the server aggregates)."
    )

    @Option(help: "CSV file with a header row.") var data: String
    @Option(help: "The class-label column (integers from 0).") var label: String
    @Option(help: "Number of silos.") var silos = 3
    @Option(help: "iid, dirichlet:ALPHA (label skew) or quantity:ALPHA (size skew).") var partition = "iid"
    @Option(help: "logistic, softmax, mlp:H or mlp:H1,H2.") var model = "logistic"
    @Option(help: "Federated rounds.") var rounds = 20
    @Option(name: .customLong("local-epochs"), help: "Local epochs per round.") var localEpochs = 1
    @Option(name: .customLong("batch-size"), help: "Minibatch size without DP.") var batchSize = 32
    @Option(name: .customLong("learning-rate"), help: "Local learning rate.") var learningRate: Float = 0.1
    @Flag(help: "Use Adam locally instead of SGD.") var adam = false
    @Option(help: "Server strategy: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, trimmed-mean[:β], krum[:f], multi-krum[:f], bulyan[:f].")
    var strategy = "fedavg"
    @Option(name: .customLong("norm-bound"), help: "Scale every update down to this L2 norm before aggregating.") var normBound: Double?
    @Option(name: .customLong("max-update-norm"), help: "Refuse updates with a larger L2 norm (validation).") var maxUpdateNorm: Double?
    @Option(help: "K silos attack: K:sign-flip[:X], K:scale:X, K:gaussian:S, K:label-flip or K:backdoor.") var byzantine: String?
    @Option(help: "Compress updates: fp16, q8 or topk:FRACTION.") var compression: String?
    @Option(help: "FedProx proximal term μ.") var fedprox: Float?
    @Flag(help: "SCAFFOLD control variates.") var scaffold = false
    @Option(name: .customLong("dp-noise-multiplier"), help: "DP-SGD noise multiplier σ.") var dpNoiseMultiplier: Double?
    @Option(name: .customLong("dp-clip"), help: "DP-SGD per-example clipping norm C.") var dpClip: Double?
    @Option(name: .customLong("dp-sampling-rate"), help: "DP-SGD Poisson sampling rate q.") var dpSamplingRate: Double?
    @Option(help: "δ at which ε is reported.") var delta = 1e-5
    @Option(help: "Seed for partitions, shuffles and initial weights (DP noise is never seeded).") var seed: UInt64 = 0
    @Flag(help: "Print one JSON object on stdout at the end (live lines go to stderr).") var json = false

    func validate() throws {
        guard silos >= 1 else { throw ValidationError("--silos must be ≥ 1, got \(silos)") }
        guard rounds >= 1 else { throw ValidationError("--rounds must be ≥ 1, got \(rounds)") }
        guard localEpochs >= 1 else { throw ValidationError("--local-epochs must be ≥ 1, got \(localEpochs)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be ≥ 1, got \(batchSize)") }
        guard learningRate.isFinite, learningRate > 0 else { throw ValidationError("--learning-rate must be > 0, got \(learningRate)") }
        if let mu = fedprox { guard mu.isFinite, mu >= 0 else { throw ValidationError("--fedprox must be ≥ 0, got \(mu)") } }
        let dpFlags = [dpNoiseMultiplier == nil, dpClip == nil, dpSamplingRate == nil]
        guard dpFlags.allSatisfy({ $0 }) || dpFlags.allSatisfy({ !$0 }) else {
            throw ValidationError("DP-SGD needs all of --dp-noise-multiplier, --dp-clip and --dp-sampling-rate")
        }
        guard delta > 0, delta < 1 else { throw ValidationError("--delta must be strictly between 0 and 1, got \(delta)") }
    }

    func settings() throws -> FederatedSimulation.Settings {
        var s = FederatedSimulation.Settings()
        s.silos = silos
        s.partitioning = try translating("--partition") { try Partitioning(parsing: partition) }
        s.model = try translating("--model") { try ModelKind(parsing: model) }
        s.rounds = rounds
        s.local.epochs = localEpochs
        s.local.batchSize = batchSize
        s.local.learningRate = learningRate
        s.local.optimizer = adam ? .adam : .sgd
        s.local.proxMu = fedprox ?? 0
        if let z = dpNoiseMultiplier, let c = dpClip, let q = dpSamplingRate {
            s.local.dp = try CommandErrors.translating { try DPSGDSettings(noiseMultiplier: z, clipNorm: c, samplingRate: q) }
        }
        s.scaffold = scaffold
        if let b = byzantine {
            let (count, attack) = try translating("--byzantine") { try ByzantineAttack.parse(b) }
            s.byzantineCount = count
            s.attack = attack
        }
        do {
            var chosen = try makeStrategy(strategy, byzantine: s.byzantineCount)
            if let bound = normBound { chosen = AnyAggregationStrategy(try NormBounded(chosen, bound: bound)) }
            s.strategy = chosen
            if let c = compression { _ = try makeCodec(c) }
        } catch let e as AggregationError {
            throw ValidationError("\(e.reason.hasPrefix("compression") ? "--compression" : (e.reason.hasPrefix("norm") ? "--norm-bound" : "--strategy")): \(e.reason)")
        }
        s.compression = compression
        s.maximumUpdateNorm = maxUpdateNorm
        s.seed = seed
        s.delta = delta
        return s
    }

    private func translating<T>(_ flag: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as DatasetError { throw ValidationError("\(flag): \(e.reason)") }
    }

    func run() throws {
        let dataset: Dataset
        do { dataset = try Dataset.load(csv: URL(fileURLWithPath: data), label: label) } catch let e as DatasetError {
            throw ValidationError("--data: \(e)")
        }
        let simulation: FederatedSimulation
        do { simulation = try FederatedSimulation(data: dataset, settings: try settings()) } catch let e as DatasetError {
            throw ValidationError(e.reason)
        }
        let result: FederatedSimulation.Result
        do {
            result = try simulation.run { r in
                var line = String(format: "round %3d  accuracy %.4f  log-loss %.4f  AUC %.4f  train loss %.4f", r.round, r.accuracy, r.logLoss, r.auc, r.trainLoss)
                if !r.epsilonPerSilo.isEmpty { line += "  ε " + r.epsilonPerSilo.map { String(format: "%.3f", $0) }.joined(separator: " ") }
                if !r.excluded.isEmpty { line += "  excluded " + r.excluded.joined(separator: ",") }
                if !r.rejected.isEmpty { line += "  refused " + r.rejected.map(\.silo).joined(separator: ",") }
                if compression != nil { line += "  \(r.bytesPerSilo) B/silo" }
                if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
            }
        } catch let e as DatasetError { throw ValidationError(e.reason) } catch let e as AggregationError { throw ValidationError(e.reason) }
        if json {
            try JSONOutput.print(try Self.report(result, self))
        } else {
            let f = result.final
            print(String(format: "final: accuracy %.4f, AUC %.4f, log-loss %.4f over %d held-out rows", f.accuracy, f.auc, f.logLoss, f.examples))
            if dpNoiseMultiplier != nil {
                print("ε per silo at δ = \(delta): " + result.epsilonPerSilo.map { String(format: "%.4f", $0) }.joined(separator: ", "))
            }
            if let rate = result.detectionRate {
                print(String(format: "attackers %@ excluded in %.0f %% of their rounds", result.attackers.joined(separator: ","), rate * 100))
            }
            if let success = result.backdoorSuccess {
                print(String(format: "backdoor success: %.1f %% of held-out rows of other classes, shown the trigger, put in class 0", success * 100))
            }
            if compression != nil, let last = result.history.last {
                print(String(format: "compression: %d bytes per silo per round, %.1f× smaller than float32", last.bytesPerSilo,
                             Double(result.uncompressedBytesPerSilo) / Double(max(last.bytesPerSilo, 1))))
            }
        }
    }

    static func report(_ r: FederatedSimulation.Result, _ c: SimulateCommand) throws -> [String: Any] {
        let encoder = JSONEncoder()
        let history = try JSONSerialization.jsonObject(with: encoder.encode(r.history))
        func metrics(_ m: ClassificationMetrics) -> [String: Any] {
            ["examples": m.examples, "accuracy": m.accuracy, "log_loss": m.logLoss, "auc": m.auc.isNaN ? NSNull() : m.auc,
             "recall_per_class": m.recallPerClass.map { $0.isNaN ? NSNull() : $0 as Any }]
        }
        return [
            "data": c.data, "label": c.label, "silos": c.silos, "partition": c.partition, "model": c.model,
            "rounds": c.rounds, "local_epochs": c.localEpochs, "strategy": c.strategy, "fedprox": c.fedprox ?? 0,
            "byzantine": c.byzantine ?? NSNull(), "attackers": r.attackers, "detection_rate": r.detectionRate ?? NSNull(),
            "backdoor_success": r.backdoorSuccess ?? NSNull(),
            "compression": c.compression ?? NSNull(), "uncompressed_bytes_per_silo": r.uncompressedBytesPerSilo,
            "compression_ratio": Double(r.uncompressedBytesPerSilo) / Double(max(r.history.last?.bytesPerSilo ?? 1, 1)),
            "scaffold": c.scaffold, "seed": c.seed, "delta": c.delta,
            "dp": c.dpNoiseMultiplier.map { ["noise_multiplier": $0, "clip": c.dpClip!, "sampling_rate": c.dpSamplingRate!] as [String: Any] } ?? NSNull(),
            "history": history,
            "final": metrics(r.final),
            "per_silo": zip(r.siloSizes, r.perSilo).map { ["train_rows": $0.0, "test": metrics($0.1)] as [String: Any] },
            "epsilon_per_silo": r.epsilonPerSilo,
            "events_per_silo": try r.eventsPerSilo.map { try JSONSerialization.jsonObject(with: Data(try $0.canonicalJSON().utf8)) },
        ]
    }
}
