import ArgumentParser
import FedGateProto
import Foundation

extension ModelCommand {
    /// `fedgate model deploy VERSION --stage canary --silos a,b`, then `--stage all`.
    struct Deploy: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Deploy a registry version to silos (admins): a canary to named silos, then to every silo once the canary passed.",
            discussion: "Each silo keeps the version for local use (fedgate model predict --config gateway.yaml) and, when its policy has "
                + "monitoring:, checks it on its fresh rows and reports with DP. A check whose watched column drifted (PSI over --max-psi "
                + "and significant under the releases' noise) or whose accuracy is under the gate rolls the deployment's silos back to "
                + "the versions they ran before.")
        @OptionGroup var client: BrokerClientOptions
        @Argument(help: "The registry version to deploy.") var version: Int
        @Option(help: "canary (to --silos) or all (every connected silo; needs a passed canary of the version).") var stage: String
        @Option(help: "A canary's silos, comma-separated.") var silos: String?
        @Option(help: "A canary's largest population stability index for a watched input (default 0.25; --stage all keeps the canary's).") var maxPsi: Double?
        @Option(help: "A canary's least accuracy on fresh labelled rows (default: the version's plan's evaluation.min_accuracy).") var minAccuracy: Double?
        @Option(help: "A canary's watched inputs, comma-separated (default: all, when there are at most 16).") var watch: String?
        @Flag(help: "Print JSON.") var json = false

        func execute() async throws {
            guard version >= 1 else { throw ValidationError("VERSION: versions start at 1") }
            guard ["canary", "all"].contains(stage) else { throw ValidationError("--stage: '\(stage)' is neither canary nor all") }
            let named = silos.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } } ?? []
            if stage == "canary", named.isEmpty { throw ValidationError("--silos: a canary names its silos, e.g. --silos hospital-a,hospital-b") }
            if stage == "all", !named.isEmpty { throw ValidationError("--silos: --stage all goes to every connected silo; leave --silos out") }
            if stage == "all", maxPsi != nil || minAccuracy != nil || watch != nil {
                throw ValidationError("--stage all keeps the canary's gate: leave out --max-psi, --min-accuracy and --watch")
            }
            if let maxPsi, !(maxPsi > 0 && maxPsi.isFinite) { throw ValidationError("--max-psi: \(maxPsi) is not a number > 0") }
            if let minAccuracy, !(0...1).contains(minAccuracy) { throw ValidationError("--min-accuracy: \(minAccuracy) is not between 0 and 1") }
            let response = try await client.call { broker in
                var request = Fedgate_V1_DeployModelRequest()
                (request.version, request.stage, request.silos, request.maxPsi) = (UInt32(version), stage, named, maxPsi ?? 0)
                if let minAccuracy { request.minAccuracy = minAccuracy }
                request.watch = watch.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } } ?? []
                return try await broker.deployModel(request)
            }
            if json { return try Deployments.printJSON(response) }
            if let d = response.deployments.last {
                print("deployment \(d.id): version \(d.version) (\(d.stage)) to \(d.silos.joined(separator: ", ")); \(d.state)")
            }
        }
    }

    /// `fedgate model deployments`: which version each silo runs, and every deployment.
    struct Deployments: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Which version each silo runs, and every deployment with its checks, alerts and rollback times.")
        @OptionGroup var client: BrokerClientOptions
        @Flag(help: "Print JSON.") var json = false

        func execute() async throws {
            let response = try await client.call { try await $0.deployments(Fedgate_V1_DeploymentsRequest()) }
            if json { return try Self.printJSON(response) }
            print(Self.text(response), terminator: "")
        }

        static func text(_ r: Fedgate_V1_DeploymentsResponse) -> String {
            var out = r.running.isEmpty ? "no silo runs a deployed version\n"
                : "running: " + r.running.sorted { $0.key < $1.key }.map { "\($0.key) v\($0.value)" }.joined(separator: ", ") + "\n"
            for d in r.deployments {
                let started = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(d.startedAtMs) / 1000))
                out += "deployment \(d.id): v\(d.version) \(d.stage) to \(d.silos.joined(separator: ", ")) by \(d.by) at \(started): \(d.state.replacingOccurrences(of: "_", with: " "))\n"
                out += String(format: "  gate: PSI ≤ %.3f", d.maxPsi) + (d.minAccuracy > 0 ? String(format: ", accuracy ≥ %.4f", d.minAccuracy) : "")
                    + " on \(d.watch.joined(separator: ", "))\n"
                for (silo, problem) in d.problems.sorted(by: { $0.key < $1.key }) { out += "  \(silo): \(problem)\n" }
                for c in d.checks {
                    let worst = c.psi.max { $0.value < $1.value }
                    out += "  check \(c.silo): " + String(format: "%.0f rows", c.rows) + (c.accuracy >= 0 ? String(format: ", accuracy %.4f", c.accuracy) : "")
                        + (worst.map { ", worst PSI \($0.key) " + String(format: "%.3f (p %.1e)", $0.value, c.pValue[$0.key] ?? 1) } ?? "")
                        + (c.reasons.isEmpty ? ": passed" : ": FAILED, " + c.reasons.joined(separator: "; ")) + "\n"
                }
                if !d.alertSilo.isEmpty {
                    out += "  ALERT from \(d.alertSilo): \(d.alertReasons.joined(separator: "; "))\n"
                    out += d.state == "rolled_back" ? String(format: "  rolled back in %.3f s (alert to the last silo on its previous version)\n", d.rollbackSeconds)
                        : "  rolling back…\n"
                }
                if d.state == "monitoring", d.stage == "canary", !d.promotionBlockers.isEmpty {
                    out += "  not yet promotable: \(d.promotionBlockers.joined(separator: "; "))\n"
                }
            }
            return out
        }

        static func printJSON(_ r: Fedgate_V1_DeploymentsResponse) throws {
            let deployments: [[String: Any]] = r.deployments.map { d in
                ["id": d.id, "version": d.version, "stage": d.stage, "silos": d.silos, "state": d.state, "by": d.by, "started_at_ms": d.startedAtMs,
                 "max_psi": d.maxPsi, "min_accuracy": d.minAccuracy, "watch": d.watch, "installed": d.installed, "problems": d.problems,
                 "alert_silo": d.alertSilo, "alert_reasons": d.alertReasons, "rollback_seconds": d.rollbackSeconds, "promotion_blockers": d.promotionBlockers,
                 "checks": d.checks.map { c in
                     ["silo": c.silo, "version": c.version, "at_ms": c.atMs, "rows": c.rows, "accuracy": c.accuracy, "psi": c.psi, "p_value": c.pValue,
                      "reasons": c.reasons] as [String: Any]
                 }]
            }
            let object: [String: Any] = ["running": r.running, "deployments": deployments]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
        }
    }
}
