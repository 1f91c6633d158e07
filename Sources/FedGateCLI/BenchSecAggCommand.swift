import ArgumentParser
import FedGatePrivacy
import FedGateSecureAggregation
import Foundation

extension BenchCommand {
    /// `fedgate bench secagg`: the cost of a secure-aggregation round against a plain sum.
    struct SecAgg: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "secagg",
            abstract: "Time a secure-aggregation round (all silos and the broker in one process, one core).",
            discussion: "Without --silos it runs the standard matrix: 10 and 50 silos, 0 % and 20 % dropout."
        )

        @Option(help: "Number of silos (default: the matrix 10 and 50).")
        var silos: [Int] = []
        @Option(help: "Parameters per update.")
        var params = 1_000_000
        @Option(help: "Fractions of silos that drop out after sharing keys (default: 0 and 0.2).")
        var dropout: [Double] = []
        @Option(help: "Use SecAgg+ neighbourhoods of this degree instead of the complete graph.")
        var degree: Int?
        @Flag(help: "Print one JSON object on stdout.")
        var json = false

        func validate() throws {
            if let k = degree, k < 2 { throw ValidationError("--degree must be ≥ 2, got \(k)") }
            guard params >= 1 else { throw ValidationError("--params must be ≥ 1, got \(params)") }
            for n in silos where n < 3 { throw ValidationError("--silos must be ≥ 3, got \(n)") }
            for f in dropout where !(f >= 0 && f < 0.5) {
                throw ValidationError("--dropout must be in [0, 0.5) so that more than half the silos survive, got \(f)")
            }
        }

        func run() throws {
            let sizes = silos.isEmpty ? [10, 50] : silos
            let drops = dropout.isEmpty ? [0, 0.2] : dropout
            var rows: [[String: Any]] = []
            for n in sizes {
                for f in drops { rows.append(try measure(silos: n, dropout: f)) }
            }
            let prg = measurePRG()
            if json {
                try JSONOutput.print(["build": BenchCommand.DP.buildKind, "params": params,
                                      "mask_expansion_gigabytes_per_second": prg, "rounds": rows])
                return
            }
            print("fedgate bench secagg — \(params) parameters, one core, \(degree.map { "SecAgg+ degree \($0)" } ?? "complete graph"); mask expansion (ChaCha20 PRG) \(String(format: "%.2f", prg)) GB/s")
            for r in rows {
                if let aborted = r["aborted"] as? String {
                    print(String(format: "  n=%-3d dropout=%3.0f%%  ", r["silos"] as! Int, (r["dropout"] as! Double) * 100) + "aborted: \(aborted)")
                    continue
                }
                let phases = r["client_seconds_per_silo"] as! [String: Double]
                let perSilo = phases.values.reduce(0, +)
                print(String(format: "  n=%-3d dropout=%3.0f%%  per silo: encode %.1f ms, keys %.1f ms, shares %.1f ms, masking %.1f ms, unmasking %.1f ms (total %.1f ms)",
                             r["silos"] as! Int, (r["dropout"] as! Double) * 100,
                             phases["encode"]! * 1e3, phases["advertise_keys"]! * 1e3, phases["share_keys"]! * 1e3,
                             phases["masked_input"]! * 1e3, phases["unmasking"]! * 1e3, perSilo * 1e3))
                print(String(format: "                      broker %.1f ms; plain sum %.1f ms; secure round / plain round compute %.1f×; %.1f MB sent + %.2f MB received per silo",
                             (r["broker_seconds"] as! Double) * 1e3, (r["plain_sum_seconds"] as! Double) * 1e3,
                             r["secure_over_plain_compute"] as! Double,
                             Double(r["bytes_sent_per_silo"] as! Int) / 1e6, Double(r["bytes_received_per_silo"] as! Int) / 1e6))
            }
        }

        /// One round; silos that drop out do so after sharing keys, the costly case for the broker.
        private func measure(silos n: Int, dropout f: Double) throws -> [String: Any] {
            let ids = (0..<n).map { String(format: "silo-%03d", $0) }
            let neighbourhood: Neighbourhood = degree.map { .harary(degree: min($0, n - 1)) } ?? .complete
            let size = degree.map { min(2 * max(1, min($0 / 2, (n - 1) / 2)), n - 1) + 1 } ?? n
            let threshold = size / 2 + 1
            let config = try SecureAggregationConfiguration(round: 1, participants: ids, threshold: threshold,
                                                            neighbourhood: neighbourhood, dimension: params)
            let codec = try FixedPointCodec(clipNorm: 1, silos: n)
            var rng = ChaCha20Random()
            let clock = ContinuousClock()
            var encodeSeconds = 0.0, plainClientSeconds = 0.0
            var encoded: [SiloID: [UInt32]] = [:]
            var floats: [[Float]] = []
            for (k, id) in ids.enumerated() {
                let update = (0..<params).map { Float(($0 &* 2654435761 &+ k) % 2001 - 1000) * 1e-6 }
                let start = clock.now
                encoded[id] = try codec.encode(update, using: &rng)
                encodeSeconds += seconds(clock.now - start)
                // The plain round's silo work: the same clip and encode, no masks.
                plainClientSeconds += seconds(clock.now - start)
                floats.append(update)
            }
            let dropped = Array(ids.suffix(Int((Double(n) * f).rounded())))
            let dropouts = Dictionary(uniqueKeysWithValues: dropped.map { ($0, InMemoryRound.Phase.maskedInput) })
            let report: InMemoryRound.Report
            do {
                report = try InMemoryRound(configuration: config).run(encoded: encoded, dropouts: dropouts)
            } catch let error as SecureAggregationError {
                // Too few survivors in some neighbourhood: the protocol aborts, as it must.
                return ["silos": n, "neighbourhood": degree.map { "harary(\($0))" } ?? "complete", "dropout": f,
                        "dropped": dropped.count, "threshold": threshold, "aborted": error.description]
            }

            // The plain round's broker work: summing the survivors' updates.
            let start = clock.now
            var plain = [UInt32](repeating: 0, count: params)
            for id in report.survivors {
                let e = encoded[id]!
                plain.withUnsafeMutableBufferPointer { s in e.withUnsafeBufferPointer { v in for i in 0..<s.count { s[i] &+= v[i] } } }
            }
            let plainSum = seconds(clock.now - start)
            guard plain == report.sum else { throw ValidationError("internal error: the secure sum differs from the plain sum") }

            var perSilo: [String: Double] = ["encode": encodeSeconds / Double(n)]
            for p in InMemoryRound.Phase.allCases { perSilo[p.rawValue] = (report.clientSeconds[p] ?? 0) / Double(n) }
            let secureCompute = report.clientSeconds.values.reduce(0, +) + encodeSeconds + report.brokerSeconds
            let plainCompute = plainClientSeconds + plainSum
            return [
                "silos": n, "neighbourhood": degree.map { "harary(\($0))" } ?? "complete", "dropout": f, "dropped": dropped.count, "threshold": threshold,
                "client_seconds_per_silo": perSilo, "broker_seconds": report.brokerSeconds,
                "plain_sum_seconds": plainSum, "secure_round_compute_seconds": secureCompute,
                "plain_round_compute_seconds": plainCompute, "secure_over_plain_compute": secureCompute / plainCompute,
                "bytes_sent_per_silo": report.bytesSent.values.reduce(0, +) / n,
                "bytes_received_per_silo": report.bytesReceived.values.reduce(0, +) / n,
                "plain_bytes_per_silo": 4 * params,
            ]
        }

        private func measurePRG() -> Double {
            var buffer = [UInt32](repeating: 0, count: params)
            let seed = (0..<32).map { UInt8($0) }
            let clock = ContinuousClock()
            var best = Double.infinity
            for _ in 0..<5 {
                let start = clock.now
                MaskExpansion.apply(seed: seed, subtract: false, to: &buffer)
                best = min(best, seconds(clock.now - start))
            }
            return Double(4 * params) / best / 1e9
        }

        private func seconds(_ d: Duration) -> Double {
            Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
    }
}
