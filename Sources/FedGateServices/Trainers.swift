import FedGateLearning
import FedGatePolicy
import FedGatePrivacy
import Logging

/// What a silo's local training gives back for a round: the update (with the trainer's DP already
/// applied), the rows it trained on, and the trainer's own figures.
struct TrainedUpdate: Sendable {
    var delta: [Float]
    let examples: Int
    let metrics: [String: Double]
    /// SCAFFOLD: this silo's new control variate, and its local steps times its learning rate.
    var scaffold: (client: [Float], scale: Double)? = nil
}

/// How a silo trains for a round. Every trainer applies its differential privacy before it returns,
/// so the update it gives back is exactly what the round's ledger reservation
/// (`TrainingPlan.roundEvent`) pays for; nothing downstream adds or removes noise.
protocol Trainer: Sendable {
    func train(_ global: Network, on rows: Dataset, round: UInt32, plan: TrainingPlan) async throws -> TrainedUpdate
}

/// The gateway's own DP-SGD: Poisson sampling from the CSPRNG, per-example clipping and Gaussian
/// noise on each of the plan's `local_steps` (`dpsgd` events).
struct BuiltInTrainer: Trainer {
    let learningRate: Float
    /// Tests only: noise from a known seed (run, silo), to compare with the simulator; no privacy.
    let repeatable: (run: UInt64, silo: Int)?
    /// SCAFFOLD: the server's control variate and this silo's, which correct every local step.
    var scaffold: LocalTrainer.Scaffold? = nil

    func train(_ global: Network, on rows: Dataset, round: UInt32, plan: TrainingPlan) async throws -> TrainedUpdate {
        var local = LocalTrainingSettings()
        local.learningRate = learningRate
        local.dp = try DPSGDSettings(noiseMultiplier: try plan.noiseMultiplier(), clipNorm: plan.dp.clipNorm, samplingRate: plan.dp.samplingRate)
        local.dpSteps = plan.localSteps
        local.proxMu = Float(plan.fedprox ?? 0)
        local.discreteNoise = plan.dp.discreteNoise == true
        if let repeatable { local.repeatableNoise = RepeatableNoise(run: repeatable.run, silo: repeatable.silo, round: Int(round)) }
        var scaffold = self.scaffold
        var shuffle = SimulationRandom(seed: UInt64(round))
        let update = try LocalTrainer(settings: local).train(global, on: rows, scaffold: &scaffold, shuffle: &shuffle)
        var delta = update.parameters
        for k in delta.indices { delta[k] -= global.parameters[k] }
        var trained = TrainedUpdate(delta: delta, examples: update.examples, metrics: ["train_loss": Double(update.meanLoss)])
        if let scaffold { trained.scaffold = (scaffold.client, Double(update.steps) * Double(learningRate)) }
        return trained
    }
}

/// A silo's own training program (the policy's `programs:`), run by `ExternalExecutor`; the gateway,
/// not the program, then clips the whole update to `dp.clip_norm` and adds the Gaussian noise the
/// plan names once (a `gaussian(σ / 2)` event: a record may move a clipped update across the ball).
struct ProgramTrainer: Trainer {
    let name: String
    let program: ExecutorProgram
    /// What the program is told about the round (`task.json`).
    let task: [String: any Sendable]
    let logger: Logger

    func train(_ global: Network, on rows: Dataset, round: UInt32, plan: TrainingPlan) async throws -> TrainedUpdate {
        let output = try await ExternalExecutor(name: name, program: program).run(
            model: try ModelPayload.flatModel(global), task: task, train: rows, dimension: global.parameters.count, logger: logger)
        var delta = output.delta
        var noise = GaussianNoiseGenerator()
        let mechanism = try GaussianMechanism(clipNorm: plan.dp.clipNorm, noiseMultiplier: try plan.noiseMultiplier())
        _ = try mechanism.apply(to: &delta, noise: &noise)
        return TrainedUpdate(delta: delta, examples: output.examples, metrics: output.metrics.filter { !["accuracy", "eval_examples"].contains($0.key) })
    }
}
