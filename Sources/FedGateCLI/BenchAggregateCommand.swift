import ArgumentParser
import FedGateAggregation
import Foundation

extension BenchCommand {
    /// `fedgate bench aggregate`: aggregation throughput, with NumPy timed on the same shapes.
    struct Aggregate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "aggregate",
            abstract: "FedAvg, median, trimmed mean and Krum throughput (GB/s of updates), against NumPy when it is installed."
        )

        @Option(help: "Parameters per update.") var params = 1_000_000
        @Option(name: .customLong("fedavg-updates"), help: "Updates folded by FedAvg.") var fedavgUpdates = 100
        @Option(name: .customLong("robust-updates"), help: "Updates for median, trimmed mean and Krum.") var robustUpdates = 20
        @Option(help: "Repetitions; the best is reported.") var repetitions = 3
        @Flag(name: .customLong("no-numpy"), help: "Skip the NumPy comparison.") var noNumpy = false
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func validate() throws {
            guard params >= 8, fedavgUpdates >= 1, robustUpdates >= 5, repetitions >= 1 else {
                throw ValidationError("--params ≥ 8, --fedavg-updates ≥ 1, --robust-updates ≥ 5 and --repetitions ≥ 1")
            }
        }

        func run() throws {
            func make(_ n: Int) -> [[Float]] {
                (0..<n).map { (k: Int) -> [Float] in
                    (0..<params).map { (i: Int) -> Float in
                        let h: Int = (i &* 2654435761) &+ (k &* 40503)
                        return Float(h % 2001 - 1000) * 1e-4
                    }
                }
            }
            let clock = ContinuousClock()
            func best(_ body: () throws -> Void) rethrows -> Double {
                var t = Double.infinity
                for _ in 0..<repetitions {
                    let s = clock.now
                    try body()
                    let d = clock.now - s
                    t = min(t, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
                }
                return t
            }
            let zero = [Float](repeating: 0, count: params)
            var rows: [String: Any] = [:]

            // FedAvg: every update a separate buffer, as if each had just arrived.
            var many = make(fedavgUpdates)
            let fedavg = try best {
                var s = FedAvg()
                _ = try s.aggregate(global: zero, updates: many.enumerated().map { ClientUpdate(silo: "\($0.offset)", delta: $0.element, examples: 1) })
            }
            many = []
            let fedavgBytes = Double(fedavgUpdates * params * 4)
            rows["fedavg"] = ["updates": fedavgUpdates, "seconds": fedavg, "gigabytes_per_second": fedavgBytes / fedavg / 1e9]

            let few = make(robustUpdates).enumerated().map { ClientUpdate(silo: "\($0.offset)", delta: $0.element, examples: 1) }
            let robustBytes = Double(robustUpdates * params * 4)
            let elements = Double(robustUpdates * params)
            func robust(_ name: String, _ make: () throws -> any AggregationStrategy) throws {
                let t = try best { var s = try make(); _ = try s.aggregate(global: zero, updates: few) }
                rows[name] = ["updates": robustUpdates, "seconds": t, "gigabytes_per_second": robustBytes / t / 1e9,
                              "nanoseconds_per_element": t / elements * 1e9]
            }
            try robust("median") { CoordinateMedian() }
            try robust("trimmed_mean") { try TrimmedMean(beta: 0.2) }
            try robust("krum") { try MultiKrum(byzantine: 2, selected: 1) }

            try report(rows, numpy: noNumpy ? [:] : timeNumpy())
        }

        /// Prints what was measured, beside NumPy's times for the same shapes when there are any.
        private func report(_ rows: [String: Any], numpy: [String: Double]) throws {
            var result: [String: Any] = ["build": BenchCommand.DP.buildKind, "params": params, "strategies": rows]
            if !numpy.isEmpty { result["numpy_seconds"] = numpy }
            if json { try JSONOutput.print(result); return }

            print("fedgate bench aggregate — \(params) float32 parameters per update, best of \(repetitions)")
            func line(_ label: String, _ key: String, _ numpyKey: String?) {
                let r = rows[key] as! [String: Any]
                var s = "  " + label.padding(toLength: 34, withPad: " ", startingAt: 0)
                s += String(format: " %7.2f GB/s  (%.1f ms)", r["gigabytes_per_second"] as! Double, (r["seconds"] as! Double) * 1e3)
                if let k = numpyKey, let n = numpy[k] { s += String(format: "   NumPy %.1f ms: %.1f× faster", n * 1e3, n / (r["seconds"] as! Double)) }
                print(s)
            }
            line("FedAvg, \(fedavgUpdates) updates streamed", "fedavg", "weighted_mean")
            line("coordinate median, \(robustUpdates) updates", "median", "median")
            line("trimmed mean 20 %, \(robustUpdates) updates", "trimmed_mean", "trim_mean")
            line("Krum (f = 2), \(robustUpdates) updates", "krum", nil)
            if numpy.isEmpty { print("  (NumPy not timed: python3 with numpy and scipy not found, or --no-numpy)") }
        }

        /// Times NumPy/SciPy on the same shapes in a child process; empty if unavailable.
        private func timeNumpy() -> [String: Double] {
            let script = """
            import json, time, numpy as np
            from scipy import stats
            p, n, m = \(params), \(robustUpdates), \(fedavgUpdates)
            rng = np.random.default_rng(0)
            A = rng.standard_normal((n, p), dtype=np.float32)
            B = rng.standard_normal((m, p), dtype=np.float32); w = np.full(m, 1.0 / m, dtype=np.float32)
            def best(f):
                t = 1e9
                for _ in range(\(repetitions)):
                    s = time.perf_counter(); f(); t = min(t, time.perf_counter() - s)
                return t
            print(json.dumps({"median": best(lambda: np.median(A, axis=0)),
                              "trim_mean": best(lambda: stats.trim_mean(A, 0.2, axis=0)),
                              "weighted_mean": best(lambda: w @ B)}))
            """
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", script]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            do { try process.run() } catch { return [:] }
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0,
                  let parsed = try? JSONSerialization.jsonObject(with: data) as? [String: Double] else { return [:] }
            return parsed
        }
    }
}
