import ArgumentParser
import FedGatePrivacy
import Foundation

/// `fedgate privacy …`: plan a privacy budget before a run.
struct PrivacyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "privacy",
        abstract: "Compute ε for a DP-SGD run or the noise multiplier for a target ε, or audit the trainer empirically.",
        subcommands: [Epsilon.self, Noise.self, Audit.self]
    )

    struct RunOptions: ParsableArguments {
        @Option(name: .customLong("sampling-rate"), help: "Poisson sampling probability q of each step, in (0, 1].")
        var samplingRate: Double
        @Option(help: "Number of DP-SGD steps.")
        var steps: Int
        @Option(help: "δ of the (ε, δ) guarantee, in (0, 1).")
        var delta: Double
        @Option(help: "Accountant: rdp (Rényi DP) or pld (privacy loss distributions, tighter).")
        var accountant: AccountantKind = .rdp
        @Option(name: .customLong("statistics-noise-multiplier"),
                help: "A plan's statistics release (its statistics.noise_multiplier), spent before the steps.")
        var statisticsNoise: Double?
        @Flag(help: "Print one JSON object on stdout.")
        var json = false

        /// What the run spends besides its steps: the plan's statistics release, if given.
        var prior: DPEvent { statisticsNoise.map { .gaussian(noiseMultiplier: $0) } ?? .noOp }

        /// The statistics release (if any) and `steps` DP-SGD steps at `sigma`.
        func event(_ sigma: Double) -> DPEvent {
            let steps = DPEvent.dpsgd(samplingProbability: samplingRate, noiseMultiplier: sigma, steps: steps)
            return prior == .noOp ? steps : .composed([prior, steps])
        }

        func validate() throws {
            if let z = statisticsNoise, !(z.isFinite && z > 0) {
                throw ValidationError("--statistics-noise-multiplier must be a finite number > 0, got \(z)")
            }
            guard samplingRate.isFinite, samplingRate > 0, samplingRate <= 1 else {
                throw ValidationError("--sampling-rate must be in (0, 1], got \(samplingRate)")
            }
            guard steps >= 0 else { throw ValidationError("--steps must be ≥ 0, got \(steps)") }
            guard delta.isFinite, delta > 0, delta < 1 else {
                throw ValidationError("--delta must be strictly between 0 and 1 (for example 1e-5), got \(delta)")
            }
        }
    }

    struct Epsilon: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "ε spent by `steps` Poisson-sampled Gaussian steps.")

        @OptionGroup var options: RunOptions
        @Option(name: .customLong("noise-multiplier"), help: "σ: noise standard deviation divided by the clipping norm.")
        var noiseMultiplier: Double

        func validate() throws {
            guard noiseMultiplier.isFinite, noiseMultiplier > 0 else {
                throw ValidationError("--noise-multiplier must be a finite number > 0, got \(noiseMultiplier)")
            }
        }

        func run() throws { print(try output()) }

        /// What the command prints: one line of text, or one JSON object with `--json`.
        func output() throws -> String {
            let event = options.event(noiseMultiplier)
            let eps = try CommandErrors.translating {
                try epsilon(of: event, delta: options.delta, accountant: options.accountant)
            }
            if options.json {
                return try JSONOutput.render([
                    "sampling_rate": options.samplingRate, "noise_multiplier": noiseMultiplier, "steps": options.steps,
                    "delta": options.delta, "accountant": options.accountant.rawValue, "epsilon": eps,
                    "event": try JSONSerialization.jsonObject(with: Data(try event.canonicalJSON().utf8)),
                ])
            } else {
                return ("ε = \(eps) at δ = \(options.delta)  (\(options.accountant.rawValue.uppercased()); q = \(options.samplingRate), σ = \(noiseMultiplier), \(options.steps) steps)")
            }
        }
    }

    struct Noise: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The smallest noise multiplier that keeps ε at or below a target.")

        @OptionGroup var options: RunOptions
        @Option(name: .customLong("target-epsilon"), help: "The ε the run may spend.")
        var targetEpsilon: Double

        func validate() throws {
            guard targetEpsilon.isFinite, targetEpsilon > 0 else {
                throw ValidationError("--target-epsilon must be a finite number > 0, got \(targetEpsilon)")
            }
            guard options.steps >= 1 else { throw ValidationError("--steps must be ≥ 1 to calibrate noise, got \(options.steps)") }
        }

        func run() throws { print(try output()) }

        /// What the command prints: one line of text, or one JSON object with `--json`.
        func output() throws -> String {
            let sigma = try CommandErrors.translating {
                try NoiseCalibration.noiseMultiplier(targetEpsilon: targetEpsilon, delta: options.delta,
                                                     samplingProbability: options.samplingRate, steps: options.steps,
                                                     prior: options.prior, accountant: options.accountant)
            }
            let achieved = try epsilon(of: options.event(sigma), delta: options.delta, accountant: options.accountant)
            if options.json {
                return try JSONOutput.render([
                    "target_epsilon": targetEpsilon, "sampling_rate": options.samplingRate, "steps": options.steps,
                    "delta": options.delta, "accountant": options.accountant.rawValue,
                    "noise_multiplier": sigma, "epsilon": achieved,
                ])
            } else {
                return ("noise multiplier σ = \(sigma)  (ε = \(achieved) ≤ \(targetEpsilon) at δ = \(options.delta), \(options.accountant.rawValue.uppercased()))")
            }
        }
    }
}

extension AccountantKind: ExpressibleByArgument {}

/// Turns library errors into command-line errors that name what to fix.
enum CommandErrors {
    static let flagForField = [
        "sampling_probability": "--sampling-rate", "noise_multiplier": "--noise-multiplier",
        "count": "--steps", "steps": "--steps", "delta": "--delta", "target_epsilon": "--target-epsilon",
        "event": "--accountant pld",
        "dp_noise_multiplier": "--dp-noise-multiplier", "dp_clip": "--dp-clip", "dp_sampling_rate": "--dp-sampling-rate",
    ]

    static func translating<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as PrivacyError {
            let leaf = error.field.split(separator: ".").last.map(String.init) ?? error.field
            throw ValidationError("\(flagForField[leaf] ?? error.field): \(error.reason)")
        }
    }
}

/// One JSON object for stdout, keys sorted.
enum JSONOutput {
    static func render(_ object: [String: Any]) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    static func print(_ object: [String: Any]) throws {
        Swift.print(try render(object))
    }
}
