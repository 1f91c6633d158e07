import ArgumentParser
import FedGateLearning
import FedGatePrivacy
import Foundation

extension PrivacyCommand {
    /// `fedgate privacy audit`: the empirical lower bound on ε of one DP-SGD run of the built-in
    /// trainer, beside the ε the accountant claims for it (`PrivacyAudit`).
    struct Audit: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Audit the built-in DP-SGD trainer empirically: canaries in one training run, an ε lower bound beside the accountant's claim.",
            discussion: "White-box gradient canaries (Steinke, Nasr and Jagielski 2023): extra all-zero input columns whose weights no row's "
                + "gradient reaches; each canary, put in with probability ½, is sampled and clipped like a row. The auditor guesses from the "
                + "trained weights which canaries went in; the right guesses refute every ε below the reported bound at the confidence. "
                + "One run gives a loose bound: it checks the mechanism (a bound above the claim means the noise or the clipping is broken), "
                + "it does not measure the true ε.")

        @Option(help: "Numeric rows to train on (CSV with a header).") var data = "examples/data/breast_cancer_wisconsin.csv"
        @Option(help: "The integer label column.") var label = "malignant"
        @Option(help: "logistic, softmax or mlp:H") var model = "logistic"
        @Option(name: .customLong("target-epsilon"), help: "The ε the run is calibrated to (its noise multiplier from the accountant).") var targetEpsilon: Double?
        @Option(name: .customLong("noise-multiplier"), help: "Or the noise multiplier itself.") var noiseMultiplier: Double?
        @Option(name: .customLong("sampling-rate"), help: "Poisson sampling rate q.") var samplingRate = 0.05
        @Option(help: "DP-SGD steps.") var steps = 200
        @Option(help: "δ of the claimed (ε, δ).") var delta = 1e-5
        @Option(help: "Clipping norm.") var clip = 1.0
        @Option(name: .customLong("learning-rate"), help: "The trainer's learning rate.") var learningRate: Float = 0.5
        @Option(help: "Canaries (extra input columns), each in with probability ½.") var canaries = 1000
        @Option(help: "Guesses made (half in, half out); the rest abstained on.") var guesses = 600
        @Option(help: "Confidence of the lower bound.") var confidence = 0.95
        @Option(help: "Seed of the canaries' signs and membership (the training's noise is the CSPRNG's).") var seed: UInt64 = 1
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func validate() throws {
            guard (targetEpsilon == nil) != (noiseMultiplier == nil) else { throw ValidationError("give --target-epsilon or --noise-multiplier (one of them)") }
            guard steps >= 1, canaries >= 2, (2...canaries).contains(guesses) else {
                throw ValidationError("--steps must be ≥ 1, --canaries ≥ 2 and --guesses between 2 and --canaries")
            }
            guard confidence > 0.5, confidence < 1 else { throw ValidationError("--confidence must be between 0.5 and 1, e.g. 0.95") }
        }

        func run() throws {
            let rows: Dataset
            do { rows = try Dataset.load(csv: URL(fileURLWithPath: data), label: label) } catch { throw ValidationError("--data: \(data): \(error)") }
            let kind: ModelKind
            do { kind = try ModelKind(parsing: model) } catch { throw ValidationError("--model: \(error)") }
            let sigma = try CommandErrors.translating {
                try noiseMultiplier ?? NoiseCalibration.noiseMultiplier(targetEpsilon: targetEpsilon ?? 1, delta: delta, samplingProbability: samplingRate, steps: steps)
            }
            var training = LocalTrainingSettings()
            training.learningRate = learningRate
            training.dp = try CommandErrors.translating { try DPSGDSettings(noiseMultiplier: sigma, clipNorm: clip, samplingRate: samplingRate) }
            training.dpSteps = steps
            var settings = PrivacyAudit.Settings()
            (settings.canaries, settings.guesses, settings.confidence, settings.seed) = (canaries, guesses, confidence, seed)
            let result = try PrivacyAudit(settings: settings).run(kind: kind, data: rows, training: training)
            let claimed = try CommandErrors.translating {
                try epsilon(of: .dpsgd(samplingProbability: samplingRate, noiseMultiplier: sigma, steps: steps), delta: delta)
            }
            if json {
                print(try JSONOutput.render([
                    "claimed_epsilon": claimed, "delta": delta, "noise_multiplier": sigma, "sampling_rate": samplingRate, "steps": steps,
                    "canaries": result.canaries, "included": result.included, "guesses": result.guesses, "correct": result.correct,
                    "empirical_epsilon": result.empiricalEpsilon, "confidence": confidence, "below_claim": result.empiricalEpsilon < claimed,
                ]))
                return
            }
            print(String(format: "DP-SGD (σ %.4f, q %g, %d steps): the accountant claims ε = %.3f at δ = %g", sigma, samplingRate, steps, claimed, delta))
            print(String(format: "audit: %d canaries (%d in), %d of %d guesses right: empirical ε ≥ %.3f at %.0f %% confidence",
                         result.canaries, result.included, result.correct, result.guesses, result.empiricalEpsilon, 100 * confidence))
            print(result.empiricalEpsilon < claimed ? "consistent: the empirical bound is below the claim"
                  : "INCONSISTENT: the run leaked more than the accountant claims (noise or clipping broken?)")
            if result.empiricalEpsilon >= claimed { throw ExitCode(2) }
        }
    }
}
