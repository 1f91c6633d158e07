import ArgumentParser
import FedGatePrivacy
import FedGateTensors
import Foundation

/// `fedgate bench …`: measure this machine, like `openssl speed`.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure FedGate's kernels on this machine (run from a release build).",
        subcommands: [DP.self, SecAgg.self, Train.self, Aggregate.self, BenchRoundCommand.self]
    )

    struct DP: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dp",
            abstract: "Clip + CSPRNG Gaussian noise throughput on one core, and accountant latency."
        )

        @Option(help: "Elements of the float32 update.")
        var elements = 10_000_000
        @Option(help: "Repetitions of each timing; the best is reported.")
        var repetitions = 5
        @Flag(help: "Print one JSON object on stdout.")
        var json = false

        func validate() throws {
            guard elements >= 1 else { throw ValidationError("--elements must be ≥ 1, got \(elements)") }
            guard repetitions >= 1 else { throw ValidationError("--repetitions must be ≥ 1, got \(repetitions)") }
        }

        func run() throws {
            let m = try measure()
            try report(m)
        }

        /// What the bench times: seconds for each kernel (best of the repetitions) and the accountants' figures.
        struct Measured {
            let clipNoise, noiseOnly, norm, keystream, discreteTime: Double
            let batches, discreteCount: Int
            let rdp4, rdp5, pld4, pld5: (ms: Double, epsilon: Double)
        }

        static let (q, sigma, delta) = (0.01, 1.1, 1e-5)

        func measure() throws -> Measured {
            var update = (0..<elements).map { Float(($0 % 1000) - 500) * 1e-3 }
            var noise = GaussianNoiseGenerator()
            let mechanism = try GaussianMechanism(clipNorm: 1, noiseMultiplier: 1.1)

            let clipNoise = try best { try update.withUnsafeMutableBufferPointer { _ = try mechanism.apply(to: $0, noise: &noise) } }
            let noiseOnly = best { update.withUnsafeMutableBufferPointer { noise.fill($0) } }
            let norm = best { _ = update.withUnsafeBufferPointer { VectorMath.sumOfSquares($0) } }
            var stream = ChaCha20Keystream()
            let batches = max(1, elements / 128)
            var sink = SIMD8<UInt32>()
            let keystream = best { for _ in 0..<batches { sink ^= stream.nextBlocks()[0] } }
            var rng = ChaCha20Random()
            let discrete = try DiscreteGaussianSampler(sigma: 10)
            let discreteCount = max(1, min(elements, 1_000_000))
            var discreteSink: Int64 = 0
            let discreteTime = best(repetitions: 1) { for _ in 0..<discreteCount { discreteSink &+= discrete.sample(using: &rng) } }

            let (q, sigma, delta) = (Self.q, Self.sigma, Self.delta)
            func accountantTime(_ steps: Int, _ kind: AccountantKind) throws -> (ms: Double, epsilon: Double) {
                var eps = 0.0
                let t = try bestThrowing(repetitions: kind == .pld ? 2 : repetitions) {
                    eps = try epsilon(of: .dpsgd(samplingProbability: q, noiseMultiplier: sigma, steps: steps), delta: delta, accountant: kind)
                }
                return (t * 1000, eps)
            }
            let rdp4 = try accountantTime(10_000, .rdp), rdp5 = try accountantTime(100_000, .rdp)
            let pld4 = try accountantTime(10_000, .pld), pld5 = try accountantTime(100_000, .pld)

            if sink == SIMD8(repeating: 1) && discreteSink == 42 { print("") }  // keep the work observable
            return Measured(clipNoise: clipNoise, noiseOnly: noiseOnly, norm: norm, keystream: keystream, discreteTime: discreteTime,
                            batches: batches, discreteCount: discreteCount, rdp4: rdp4, rdp5: rdp5, pld4: pld4, pld5: pld5)
        }

        /// The figures: one JSON object with `--json`, else lines with the targets to compare.
        func report(_ m: Measured) throws {
            let (clipNoise, noiseOnly, norm, keystream, discreteTime) = (m.clipNoise, m.noiseOnly, m.norm, m.keystream, m.discreteTime)
            let (batches, discreteCount, rdp4, rdp5, pld4, pld5) = (m.batches, m.discreteCount, m.rdp4, m.rdp5, m.pld4, m.pld5)
            let (q, sigma, delta) = (Self.q, Self.sigma, Self.delta)
            let n = Double(elements)
            let result: [String: Any] = [
                "elements": elements,
                "build": Self.buildKind,
                "clip_noise_elements_per_second": n / clipNoise,
                "clip_noise_seconds": clipNoise,
                "noise_elements_per_second": n / noiseOnly,
                "norm_elements_per_second": n / norm,
                "norm_gigabytes_per_second": n * 4 / norm / 1e9,
                "chacha20_keystream_gigabytes_per_second": Double(batches * 512) / keystream / 1e9,
                "discrete_gaussian_samples_per_second": Double(discreteCount) / discreteTime,
                "accountant_parameters": ["sampling_rate": q, "noise_multiplier": sigma, "delta": delta],
                "rdp_epsilon_1e4_steps_ms": rdp4.ms, "rdp_epsilon_1e5_steps_ms": rdp5.ms,
                "pld_epsilon_1e4_steps_ms": pld4.ms, "pld_epsilon_1e5_steps_ms": pld5.ms,
                "rdp_epsilon_1e5_steps": rdp5.epsilon, "pld_epsilon_1e5_steps": pld5.epsilon,
            ]
            if json {
                try JSONOutput.print(result)
                return
            }
            if Self.buildKind == "debug" {
                print("warning: this is a debug build; run `swift run -c release fedgate bench dp` for real figures\n")
            }
            func rate(_ x: Double) -> String { String(format: "%8.1f M/s", x / 1e6) }
            print("fedgate bench dp — \(elements) float32 elements, one core, best of \(repetitions)")
            print("  clip + CSPRNG Gaussian noise   \(rate(n / clipNoise)) elements  (\(String(format: "%.1f", clipNoise * 1000)) ms; target ≥ 400 M/s)")
            print("  noise generation alone         \(rate(n / noiseOnly)) normals")
            print("  ChaCha20 keystream             \(String(format: "%8.2f GB/s", Double(batches * 512) / keystream / 1e9))")
            print("  L2 norm (Double-accurate)      \(rate(n / norm)) elements  (\(String(format: "%.1f", n * 4 / norm / 1e9)) GB/s)")
            print("  exact discrete Gaussian σ=10   \(rate(Double(discreteCount) / discreteTime)) samples")
            print("  RDP ε, q=\(q) σ=\(sigma) δ=\(delta): 10⁴ steps \(String(format: "%.2f", rdp4.ms)) ms, 10⁵ steps \(String(format: "%.2f", rdp5.ms)) ms (ε = \(String(format: "%.4f", rdp5.epsilon)); target < 5 ms)")
            print("  PLD ε, same:                   10⁴ steps \(String(format: "%.1f", pld4.ms)) ms, 10⁵ steps \(String(format: "%.1f", pld5.ms)) ms (ε = \(String(format: "%.4f", pld5.epsilon)); target < 100 ms)")
        }

        static var buildKind: String {
            #if DEBUG
            return "debug"
            #else
            return "release"
            #endif
        }

        private func best(repetitions: Int? = nil, _ body: () throws -> Void) rethrows -> Double {
            try bestThrowing(repetitions: repetitions ?? self.repetitions, body)
        }

        private func bestThrowing(repetitions: Int, _ body: () throws -> Void) rethrows -> Double {
            var best = Double.infinity
            for _ in 0..<repetitions {
                let start = DispatchTime.now().uptimeNanoseconds
                try body()
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            return best
        }
    }
}
