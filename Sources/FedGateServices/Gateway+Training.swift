import FedGateAggregation
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import X509
import Crypto
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging

/// A round's task: the model fetched, the plan's trainer run on the plan's columns, the update
/// committed in the ledger as it leaves, and uploaded.
extension Gateway {
    func startTraining(_ task: Fedgate_V1_RoundTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                               reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) {
        let key = RoundKey(task.planHash, task.round)
        deadlines[key] = task.deadlineMs
        training[key] = Task {
            do {
                if task.hasSecagg {
                    try self.advertise(task, reply: reply)
                    await self.crashPoint("advertised", after: .milliseconds(300))
                }
                try await self.train(task, broker: broker)
            } catch {
                await self.trainingFailed(key, error)
            }
            self.trainingEnded(key)
        }
    }

    func trainingEnded(_ key: RoundKey) { training.removeValue(forKey: key) }

    func trainingFailed(_ key: RoundKey, _ error: any Error) async {
        logger.error("round task failed", metadata: ["silo": "\(siloID)", "task": "\(key)", "error": "\(error)"])
        if let below = error as? SecureSession.BelowMinimum { await leftSecureRound(key, below) }
    }

    /// Records in the silo's own trail that it left a secure round its policy does not accept.
    func leftSecureRound(_ key: RoundKey, _ below: SecureSession.BelowMinimum) async {
        logger.warning("left a secure round below this silo's policy", metadata: ["silo": "\(siloID)", "task": "\(key)", "reason": "\(below)"])
        try? await governor.ledger.backend.audit(.refused(.secureRound, .init(reason: below.description, plan: key.plan, round: Int(key.round))),
                                                 actor: siloID, subject: key.plan, at: Date())
    }

    func train(_ task: Fedgate_V1_RoundTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws {
        guard let accepted = judge.accepted(task.planHash) else {
            throw GatewayError.unacceptedPlan(plan: task.planHash, asked: "a task")
        }
        let plan = accepted.plan
        let payload = try await fetchModel(broker, plan: task.planHash, round: task.round, sha256: task.modelSha256, until: task.deadlineMs)
        await crashPoint("training")

        let train = try Self.standardised(accepted.train, task), test = try Self.standardised(accepted.test, task)
        let kind = try ModelKind(parsing: plan.model)
        let dimension = try Network.parameterCount(kind: kind, inputs: train.featureCount, classes: Int(task.classes))
        var global = try Network(kind: kind, inputs: train.featureCount, classes: Int(task.classes),
                                 parameters: try ModelPayload.modelParameters(payload, dimension: dimension))
        // FedPer: this silo's own layers replace the broker's (which never change for them).
        let localRanges = (plan.localLayers ?? []).compactMap { global.layerRanges.indices.contains($0) ? global.layerRanges[$0] : nil }
        if let own = personal[task.planHash], own.count == global.parameters.count {
            for r in localRanges { global.parameters.replaceSubrange(r, with: own[r]) }
        }
        // The previous model on the held-out rows, only when the silo's policy releases it without DP
        // (`releases.without_dp: [round_accuracy]`); otherwise it is not worked out at all.
        let metrics = governor.policy.allows(.roundAccuracy) ? Self.heldOutFigures(global, test, task) : [:]

        let siloTrainer = try scaffolded(try trainer(for: plan, task: task, layers: global.layerSizes, label: train.labelName),
                                         plan: plan, payload: payload, hash: task.planHash, dimension: dimension)
        let trained = try await siloTrainer.train(global, on: train, round: task.round, plan: plan)
        if let scaffold = trained.scaffold { scaffoldClients[task.planHash] = scaffold.client }
        var delta = trained.delta
        if !localRanges.isEmpty {
            // The local layers stay here: kept for the next round, and nothing of them is sent.
            var mine = global.parameters
            for k in mine.indices { mine[k] += delta[k] }
            personal[task.planHash] = mine
            for r in localRanges { for k in r { delta[k] = 0 } }
        }
        let bytes = task.hasSecagg ? [] : try encoded(delta, plan: plan, hash: task.planHash)

        let key = RoundKey(task.planHash, task.round)
        // What leaves beside the update: its weight, the released row count (never the exact one),
        // and the held-out figures above. The trainer's own figures stay here, in the log.
        let examples = Int(try await releasedWeight(accepted, plan: task.planHash))
        logger.info("trained", metadata: ["silo": "\(siloID)", "round": "\(task.round)", "rows": "\(trained.examples)",
                                          "metrics": "\(trained.metrics)"])
        activity.lastDelta = delta
        if task.hasSecagg {
            // Under secure aggregation the update leaves only masked, once the broker relayed the shares.
            secure[key]?.update = (delta, TransferHeader(planHash: task.planHash, round: Int(task.round), totalBytes: 4 * delta.count,
                                                         examples: examples, metrics: metrics))
            try await maskAndUploadIfReady(key, broker: broker)
            return
        }
        var header = TransferHeader(planHash: task.planHash, round: Int(task.round), totalBytes: bytes.count, examples: examples,
                                    metrics: metrics)
        header.scaffoldScale = trained.scaffold?.scale ?? 0
        try await send(bytes, header, key: key, what: "update", broker: broker)
        await crashPoint("uploaded")
    }

    /// SCAFFOLD: the built-in trainer given the server's control from the round's file and this
    /// silo's own from its last round (zero at first); any other plan's trainer as it is.
    func scaffolded(_ trainer: any Trainer, plan: TrainingPlan, payload: [UInt8], hash: String, dimension: Int) throws -> any Trainer {
        guard plan.scaffold == true, var builtIn = trainer as? BuiltInTrainer else { return trainer }
        guard let server = try ModelPayload.scaffoldControl(payload, dimension: dimension) else {
            throw GatewayError.brokerRefused(what: "SCAFFOLD round", reason: "the round's model file carries no server control variate")
        }
        builtIn.scaffold = LocalTrainer.Scaffold(server: server, client: scaffoldClients[hash] ?? [Float](repeating: 0, count: dimension))
        return builtIn
    }

    /// The update as it travels: the plan's codec's bytes (after the trainer's DP: post-processing),
    /// or float32 safetensors.
    func encoded(_ delta: [Float], plan: TrainingPlan, hash: String) throws -> [UInt8] {
        guard let name = plan.compression else { return try ModelPayload.update(delta) }
        var codec = try codecs[hash] ?? makeCodec(name)
        defer { codecs[hash] = codec }
        return codec.encode(delta)
    }

    /// The model's accuracy (a regression's RMSE) on the held-out rows, and their count.
    static func heldOutFigures(_ model: Network, _ test: Dataset, _ task: Fedgate_V1_RoundTask) -> [String: Double] {
        let figure = model.regression ? ("rmse", model.evaluateRegression(test, targetMean: task.targetMean, targetScale: task.targetScale).rmse)
            : ("accuracy", model.evaluate(test).accuracy)
        return [figure.0: figure.1, "eval_examples": Double(test.count)]
    }

    /// Rows standardised as the consortium agreed: features, and a regression target.
    static func standardised(_ rows: Dataset, _ task: Fedgate_V1_RoundTask) throws -> Dataset {
        var rows = rows
        guard task.featureMeans.count == rows.featureCount, task.featureScales.count == rows.featureCount else {
            throw GatewayError.standardisationMismatch(consortium: task.featureMeans.count, silo: rows.featureCount)
        }
        rows.standardise(Standardisation(means: task.featureMeans, scales: task.featureScales))
        if rows.targets != nil {
            guard task.targetScale > 0, task.targetScale.isFinite, task.targetMean.isFinite else {
                throw GatewayError.targetStandardisationMissing(plan: task.planHash)
            }
            rows.standardiseTarget(mean: task.targetMean, scale: task.targetScale)
        }
        return rows
    }

    /// The plan's trainer at this silo: the built-in DP-SGD, or the program the policy names.
    func trainer(for plan: TrainingPlan, task: Fedgate_V1_RoundTask, layers: [Int], label: String) throws -> any Trainer {
        switch plan.executor {
        case .builtin:
            return BuiltInTrainer(learningRate: settings.learningRate, repeatable: settings.fixedNoise)
        case .program(let name):
            guard let program = governor.policy.programs[name] else { throw GatewayError.noProgram(executor: name) }
            return ProgramTrainer(name: name, program: program, task: executorTask(task, plan: plan, layers: layers, label: label), logger: logger)
        }
    }

    /// What a silo's own program is told about the round (`task.json`).
    func executorTask(_ task: Fedgate_V1_RoundTask, plan: TrainingPlan, layers: [Int], label: String) -> [String: any Sendable] {
        ["plan_hash": task.planHash, "round": Int(task.round), "model": plan.model, "layer_sizes": layers, "classes": Int(task.classes),
         "label": label, "columns": plan.columns, "learning_rate": Double(settings.learningRate), "local_steps": plan.localSteps,
         "sampling_rate": plan.dp.samplingRate, "seed": Int(task.round), "standardised": true, "fedprox_mu": plan.fedprox ?? 0]
    }

    /// Commits the round's reservation (the update is about to leave the silo: its privacy is spent,
    /// whatever the broker does with it), then uploads the payload in chunks with its SHA-256.
    func send(_ bytes: [UInt8], _ header: TransferHeader, key: RoundKey, what: String,
                      broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws {
        try await commit(key)
        let (ranges, digest) = (chunkRanges(total: bytes.count, chunkBytes: settings.limits.chunkBytes), TransferDigest.hex(bytes))
        let receipt = try await broker.uploadUpdate(request: StreamingClientRequest { writer in
            for chunk in transferMessages(header, chunks: ranges.lazy.map { Data(bytes[$0]) }, sha256: digest) { try await writer.write(chunk) }
        }, options: transferOptions(until: deadlines[key]))
        activity.bytesSent += bytes.count
        metrics.count("fedgate_bytes_total", [("direction", "out")], by: bytes.count)
        guard receipt.accepted else { throw GatewayError.brokerRefused(what: what, reason: receipt.reason) }
        activity.updatesSent += 1
        logger.info("\(what) sent", metadata: ["silo": "\(siloID)", "round": "\(header.round)", "bytes": "\(bytes.count)"])
    }

    /// A round's model from the broker, range after range into one assembler (the broker never has
    /// more than one range of this silo's download queued), checked against the SHA-256 announced.
    func fetchModel(_ broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>, plan: String, round: UInt32,
                    sha256: String, until deadlineMs: Int64) async throws -> [UInt8] {
        var request = Fedgate_V1_ModelRequest()
        request.planHash = plan
        request.round = round
        return try await fetch(broker, request, what: "model for round \(round)", sha256: sha256, until: deadlineMs) {
            GatewayError.modelDigestMismatch(round: round)
        }
    }

    /// A file from the broker as ranges (`request` says which: a round's model or a registry
    /// version), checked against the SHA-256 it was announced with (else `mismatch`).
    func fetch(_ broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>, _ base: Fedgate_V1_ModelRequest, what: String, sha256: String,
               until deadlineMs: Int64?, mismatch: () -> GatewayError) async throws -> [UInt8] {
        let (grace, cap) = (settings.transferGrace, settings.limits.uploadTimeout)
        var request = base
        let (payload, digest) = try await RangedFetch.file(maximumBytes: settings.limits.maximumPayloadBytes, what: what,
                                                           rangeBytes: settings.limits.downloadRangeBytes) { offset, length in
            request.offset = offset
            request.length = length
            // Each range gets what is left of the round, so the whole download ends by its deadline too.
            return try await broker.downloadModel(request, options: Self.transferOptions(until: deadlineMs, grace: grace, cap: cap)) {
                try await RangedFetch.gather($0.messages, limit: length)
            }
        }
        activity.bytesReceived += payload.count
        metrics.count("fedgate_bytes_total", [("direction", "in")], by: payload.count)
        // The bytes hash to what the stream declared (checked by the assembler); that must be the announced model.
        guard digest == sha256.lowercased() else { throw mismatch() }
        return payload
    }

    /// A round's transfer ends by the round's deadline, and a grace for clocks that differ
    /// (`Settings.transferGrace`), never later than the upload timeout: a broker that takes a call
    /// and never answers it fails the call, instead of holding the round's task, and with it the
    /// settling of the round and this silo's next offers, for ever.
    func transferOptions(until deadlineMs: Int64?) -> CallOptions {
        Self.transferOptions(until: deadlineMs, grace: settings.transferGrace, cap: settings.limits.uploadTimeout)
    }

    static func transferOptions(until deadlineMs: Int64?, grace: Duration, cap: Duration) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = transferTimeout(until: deadlineMs, now: Date(), grace: grace, cap: cap)
        return options
    }

    /// What is left of the round at `now` (none once its deadline passed) plus `grace`, at most `cap`.
    static func transferTimeout(until deadlineMs: Int64?, now: Date, grace: Duration, cap: Duration) -> Duration {
        guard let deadlineMs else { return cap }
        let left = max(0, Double(deadlineMs) / 1000 - now.timeIntervalSince1970)
        return min(.milliseconds(Int64((left * 1000).rounded())) + grace, cap)
    }
}
