import ArgumentParser
import FedGatePKI
import FedGatePolicy
import FedGateProto
import FedGateServices
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// How a person's tool reaches the broker: mutual TLS with their own certificate.
struct BrokerClientOptions: ParsableArguments {
    @Option(help: "The broker, host:port.") var broker = "127.0.0.1:7443"
    @Option(help: "The broker's name in its certificate.") var serverName = "broker"
    @Option(help: "Your certificate (PEM), from the consortium CA.") var cert: String
    @Option(help: "Your private key (PEM).") var key: String
    @Option(help: "The consortium CA's certificate (PEM).") var ca: String
    @Option(help: "Seconds each request may take, connecting included (model and audit downloads are not limited).")
    var timeout = 30.0

    func call<R: Sendable>(_ body: (Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> R) async throws -> R {
        try await Self.call(broker: broker, serverName: serverName, cert: cert, key: key, ca: ca, timeout: timeout, body)
    }

    /// One mutual-TLS session with the broker for `body`, with the person's own certificate.
    static func call<R: Sendable>(broker: String, serverName: String, cert: String, key: String, ca: String, timeout: Double,
                                  _ body: (Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> R) async throws -> R {
        let parts = broker.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65_535).contains(port) else {
            throw ValidationError("--broker: '\(broker)' is not host:port")
        }
        let credentials: TLSCredentials
        do {
            credentials = try TLSCredentials(certificate: URL(fileURLWithPath: cert), key: URL(fileURLWithPath: key), ca: URL(fileURLWithPath: ca))
        } catch let e as PKIError { throw ValidationError("--cert/--key/--ca: \(e)") }
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout: '\(timeout)' is not seconds from 0 to 3600") }
        let transport = try FedGateTransports.client(host: String(parts[0]), port: port, serverName: serverName, credentials: credentials,
                                                     requestTimeout: .milliseconds(Int64(timeout * 1000)))
        do {
            return try await withGRPCClient(transport: transport) { grpc in try await body(Fedgate_V1_Broker.Client(wrapping: grpc)) }
        } catch let error as RPCError where error.code == .deadlineExceeded {
            throw RemoteFailure("the broker at \(broker) did not answer within \(timeout) s (is it running, reachable and not overloaded? --timeout sets the wait)")
        } catch let error as RPCError {
            throw RemoteFailure("the broker at \(broker) answered \(error.code): \(error.message)")
        }
    }
}

/// A refusal or failure from the broker, said plainly.
struct RemoteFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Plain-text and JSON views of a plan's status, shared by submit, status, watch and cancel.
enum PlanView {
    static func json(_ s: Fedgate_V1_PlanStatusResponse) throws -> String {
        let object: [String: Any] = [
            "plan": s.planHash, "state": s.state, "reason": s.reason,
            "current_round": s.currentRound, "current_phase": s.currentPhase, "accepted": s.accepted, "refusals": s.refusals,
            "rounds": s.rounds.map { ["round": $0.round, "state": $0.state, "participants": $0.participants, "accuracy": $0.accuracy,
                                      "flags": $0.flags.map { ["silo": $0.silo, "kind": $0.kind, "reason": $0.reason] },
                                      "update_bytes": $0.bytesIn, "float32_bytes": $0.rawBytes, "sampled": $0.sampled] as [String: Any] },
            "attack_alerts": s.alerts.map { ["silo": $0.silo, "rounds": $0.rounds] as [String: Any] },
            "statistics": s.hasStatistics ? [
                "count": s.statistics.count, "silos": s.statistics.silos,
                "columns": s.statistics.columns.map { c -> [String: Any] in
                    var row: [String: Any] = ["column": c.column, "mean": c.mean, "deviation": c.deviation]
                    if !c.edges.isEmpty {
                        row["edges"] = c.edges
                        row["counts"] = zip(c.counts, c.withheld).map { $1 ? NSNull() : $0 as Any }
                        row["quartiles"] = c.quartiles
                    }
                    return row
                },
            ] as [String: Any] : NSNull(),
            "evaluation": s.evaluations.map { e -> [String: Any] in
                var row: [String: Any] = ["silo": e.silo, "accuracy": e.accuracy, "examples": e.examples, "epsilon": e.epsilonSpent, "epsilon_cap": e.epsilonCap]
                if e.personalised { row["personalised_accuracy"] = e.personalisedAccuracy }
                if regression(s) { (row["rmse"], row["mae"], row["r2"]) = (e.rmse, e.mae, e.r2) }
                if !e.slices.isEmpty { row["slices"] = e.slices.map(sliceJSON) }
                return row
            },
            "slices": s.slices.map(sliceJSON),
            "slice_gap": s.sliceGap,
            "accuracy": s.accuracy, "fairness_delta": s.fairnessDelta, "gate_passed": s.gatePassed, "gate_reasons": s.gateReasons,
            "model_version": s.modelVersion, "bytes_in": s.bytesIn, "bytes_out": s.bytesOut, "epsilon_mirror": s.epsilonMirror,
        ].merging(regression(s) ? ["rmse": s.rmse, "r2": s.r2] : [:]) { $1 }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
        return String(decoding: data, as: UTF8.self)
    }

    static func sliceJSON(_ f: Fedgate_V1_SliceFigure) -> [String: Any] { ["slice": f.slice, "accuracy": f.accuracy, "examples": f.examples] }

    /// A regression plan's final evaluation (its silos reported RMSE).
    static func regression(_ s: Fedgate_V1_PlanStatusResponse) -> Bool { s.rmse > 0 || s.evaluations.contains { $0.rmse > 0 } }

    /// The silos whose refusal is only the `approval` rule's: their people have yet to approve the plan.
    static func awaited(_ s: Fedgate_V1_PlanStatusResponse) -> [String] {
        s.refusals.compactMap { r in
            let parts = r.components(separatedBy: ": ")
            return parts.count >= 2 && parts[1] == "approval" ? parts[0] : nil
        }
    }

    /// Each round's poisoning flags and the plan's alerts, one line each.
    static func attackLines(_ s: Fedgate_V1_PlanStatusResponse) -> [String] {
        s.rounds.flatMap { r in r.flags.map { "  flagged in round \(r.round): \(flagLine($0))" } }
            + s.alerts.map { "  " + alertLine($0) }
    }

    static func alertLine(_ a: Fedgate_V1_AttackAlert) -> String {
        "ALERT: \(a.silo) flagged as a likely attacker in rounds \(a.rounds.map(String.init).joined(separator: ", "))"
    }

    /// A statistics plan's pooled figures: the count, each column's mean and deviation, its
    /// histogram (withheld cells shown as such) and quartiles.
    static func statisticsLines(_ s: Fedgate_V1_PlanStatusResponse) -> [String] {
        guard s.hasStatistics else { return [] }
        let r = s.statistics
        var lines = [String(format: "  statistics of about %.0f rows at %@ (all with DP):", r.count, r.silos.joined(separator: ", ") as NSString)]
        for c in r.columns {
            // A category's one-hot input (`sex=female`): its mean is the category's share of the rows.
            if c.column.contains("=") {
                lines.append(String(format: "    %-24@ share %.1f %% (about %.0f rows)", c.column as NSString, 100 * c.mean, c.mean * r.count))
                continue
            }
            lines.append(String(format: "    %-24@ mean %.4g  deviation %.4g", c.column as NSString, c.mean, c.deviation))
            // A histogram as the broker sent it; one whose parts do not line up is not printed (never indexed past its end).
            guard !c.edges.isEmpty, c.edges.count == c.counts.count + 1, c.withheld.count == c.counts.count else { continue }
            let cells = c.counts.indices.map { i in
                String(format: "[%g, %g) %@", c.edges[i], c.edges[i + 1], c.withheld[i] ? "withheld" : String(format: "%.0f", c.counts[i]) as NSString)
            }
            lines.append("      histogram: " + cells.joined(separator: ", "))
            if c.quartiles.count == 3 { lines.append(String(format: "      quartiles %.4g, median %.4g, %.4g", c.quartiles[0], c.quartiles[1], c.quartiles[2])) }
        }
        return lines
    }

    static func flagLine(_ f: Fedgate_V1_AttackFlag) -> String { "\(f.silo) \(f.kind) (\(f.reason))" }

    /// A compressed round's update bytes against float32's; nil when the updates travelled as float32.
    static func compressionLine(_ r: Fedgate_V1_RoundStatus) -> String? {
        guard r.bytesIn > 0, r.bytesIn < r.rawBytes else { return nil }
        return String(format: "updates %@, %.1f× fewer bytes than float32 (%@)", bytes(r.bytesIn) as NSString, Double(r.rawBytes) / Double(r.bytesIn), bytes(r.rawBytes) as NSString)
    }

    static func bytes(_ n: UInt64) -> String {
        n >= 1_000_000 ? String(format: "%.1f MB", Double(n) / 1e6) : String(format: "%.1f kB", Double(n) / 1e3)
    }

    static func summary(_ s: Fedgate_V1_PlanStatusResponse) -> String {
        var lines = ["plan \(s.planHash): \(s.state)\(s.reason.isEmpty ? "" : " (\(s.reason))")"]
        if s.currentRound > 0 { lines.append("  now: round \(s.currentRound), \(s.currentPhase), accepted by \(s.accepted.joined(separator: ", "))") }
        if s.currentPhase == "awaiting approval" {
            lines.append("  now: waiting, before round 1, for a person's approval at \(awaited(s).joined(separator: ", "))"
                         + (s.accepted.isEmpty ? "" : "; accepted by \(s.accepted.joined(separator: ", "))"))
        }
        for r in s.rounds {
            lines.append(String(format: "  round %3d  %-9@  %@%@", r.round, r.state as NSString, r.participants.joined(separator: ", ") as NSString,
                                r.accuracy > 0 ? String(format: "  (started from a model scoring %.4f)", r.accuracy) as NSString : "" as NSString)
                         + (compressionLine(r).map { "; " + $0 } ?? "")
                         + (r.sampled.count > r.participants.count ? " (sampled \(r.sampled.joined(separator: ", ")))" : ""))
        }
        for refusal in s.refusals { lines.append("  refused by \(refusal)") }
        lines += attackLines(s)
        lines += statisticsLines(s)
        if regression(s) {
            lines.append(String(format: "  final model: RMSE %.4f over all silos, R² %.4f (the silos', weighted by their rows)", s.rmse, s.r2))
            for e in s.evaluations {
                lines.append(String(format: "    %-16@ RMSE %.4f  MAE %.4f  R² %.4f on %4d held-out rows   ε %.3f of %.3f", e.silo as NSString, e.rmse, e.mae, e.r2,
                                    Int(e.examples), e.epsilonSpent, e.epsilonCap))
            }
        } else if !s.evaluations.isEmpty {
            lines.append(String(format: "  final model: accuracy %.4f over all silos, fairness delta %.4f", s.accuracy, s.fairnessDelta)
                         + (s.rounds.last(where: { $0.accuracy > 0 }).map {
                             String(format: " (round %d's %.4f was the model before its update)", $0.round, $0.accuracy) } ?? ""))
            for e in s.evaluations {
                lines.append(String(format: "    %-16@ accuracy %.4f on %4d held-out rows   ε %.3f of %.3f%@", e.silo as NSString, e.accuracy,
                                    Int(e.examples), e.epsilonSpent, e.epsilonCap,
                                    e.personalised ? String(format: "   personalised %.4f", e.personalisedAccuracy) as NSString : "" as NSString))
            }
            if !s.slices.isEmpty {
                lines.append("  slices (cells below a silo's least size withheld): "
                             + s.slices.map { String(format: "%@ %.4f on %d rows", $0.slice as NSString, $0.accuracy, Int($0.examples)) }.joined(separator: ", ")
                             + String(format: "; gap %.4f", s.sliceGap))
            }
        }
        if !s.evaluations.isEmpty {
            lines.append(s.gatePassed ? "  gate passed: model version \(s.modelVersion)" : "  gate held the model back: \(s.gateReasons.joined(separator: "; "))")
        }
        lines.append("  bytes: \(bytes(s.bytesOut)) to silos, \(bytes(s.bytesIn)) from silos")
        return lines.joined(separator: "\n")
    }
}

extension PlanCommand {
    struct Submit: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Submit a training plan to the broker (data scientists); prints its hash and each silo's answer to the first offer.")
        @OptionGroup var client: BrokerClientOptions
        @Argument(help: "The training plan file (YAML).") var plan: String
        @Option(help: "Seconds to wait for the silos' answers to the first offer.") var answerWait = 60.0

        func execute() async throws {
            let text: String
            do { text = try String(contentsOfFile: plan, encoding: .utf8) } catch { throw ValidationError("\(plan): cannot be read: \(error.localizedDescription)") }
            do { _ = try TrainingPlan.parse(text, file: plan) } catch { throw ValidationError("\(error)") }
            let status = try await client.call { broker in
                var request = Fedgate_V1_SubmitPlanRequest()
                request.planYaml = text
                let hash = try await broker.submitPlan(request).planHash
                print("plan \(hash) submitted")
                var status = Fedgate_V1_PlanStatusRequest()
                status.planHash = hash
                let until = Date().addingTimeInterval(answerWait)
                while true {
                    let s = try await broker.planStatus(status)
                    // The first offer is answered once the plan waits for approvals, round 1 trains, ends, or the plan stops.
                    if s.state != "running" || !s.rounds.isEmpty || s.currentPhase == "awaiting approval"
                        || (s.currentRound >= 1 && s.currentPhase != "offering") || Date() > until { return s }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            let accepted = status.rounds.first?.participants ?? status.accepted
            for silo in accepted { print("  \(silo): accepted") }
            for refusal in status.refusals {
                print(refusal.contains("approval:") ? "  \(refusal) (waiting for approval)" : "  \(refusal)")
            }
            if accepted.isEmpty && status.refusals.isEmpty { print("  no silo has answered yet") }
            if status.currentPhase == "awaiting approval" {
                print("the plan waits for these approvals before its first round; `fedgate plan status \(status.planHash)` shows where it stands")
            }
        }
    }

    struct Status: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Where a plan stands at the broker.")
        @OptionGroup var client: BrokerClientOptions
        @Argument(help: "The plan's hash.") var hash: String
        @Flag(help: "Print JSON.") var json = false

        func execute() async throws {
            let s = try await client.call { broker in
                var request = Fedgate_V1_PlanStatusRequest()
                request.planHash = hash
                return try await broker.planStatus(request)
            }
            print(json ? try PlanView.json(s) : PlanView.summary(s))
        }
    }

    struct Watch: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Follow a plan live until it stops: rounds, participants, accuracy, ε, bytes.")
        @OptionGroup var client: BrokerClientOptions
        @Argument(help: "The plan's hash.") var hash: String
        @Option(help: "Seconds between polls.") var every = 0.5

        func execute() async throws {
            let final = try await client.call { broker in
                var request = Fedgate_V1_PlanStatusRequest()
                request.planHash = hash
                var (seenRounds, seenPhase, seenAlerts) = (0, "", 0)
                while true {
                    let s = try await broker.planStatus(request)
                    let new = s.rounds.dropFirst(seenRounds)
                    for r in new {
                        print(String(format: "round %3d %@  participants %@%@", r.round, r.state, r.participants.joined(separator: ", "),
                                     r.accuracy > 0 ? String(format: "  (the model it started from scored %.4f)", r.accuracy) : ""))
                        for f in r.flags { print("          flagged: \(PlanView.flagLine(f))") }
                        if let line = PlanView.compressionLine(r) { print("          \(line)") }
                    }
                    for alert in s.alerts.dropFirst(seenAlerts) {
                        print(PlanView.alertLine(alert))
                    }
                    seenAlerts = s.alerts.count
                    // The broker's ε mirror and byte counts are as of this poll: said once, after
                    // the last round it covers, not beside every round printed since the last poll.
                    if let last = new.last(where: { $0.state == "committed" }), !s.epsilonMirror.isEmpty {
                        print("          ε after round \(last.round): " + s.epsilonMirror.sorted { $0.key < $1.key }
                            .map { String(format: "%@ %.3f", $0.key, $0.value) }.joined(separator: ", ")
                            + "   bytes so far \(PlanView.bytes(s.bytesOut)) out, \(PlanView.bytes(s.bytesIn)) in")
                    }
                    seenRounds = s.rounds.count
                    let phase = "\(s.currentRound) \(s.currentPhase)"
                    if s.currentPhase == "awaiting approval" && phase != seenPhase {
                        print("waiting for approval at \(PlanView.awaited(s).joined(separator: ", "))\(s.accepted.isEmpty ? "" : "; accepted by \(s.accepted.joined(separator: ", "))")")
                    } else if s.currentRound > 0 && phase != seenPhase {
                        print("round \(s.currentRound) \(s.currentPhase)\(s.accepted.isEmpty ? "" : ", accepted by \(s.accepted.joined(separator: ", "))")")
                    }
                    seenPhase = phase
                    if s.state != "running" { return s }
                    try await Task.sleep(for: .milliseconds(Int(every * 1000)))
                }
            }
            print(PlanView.summary(final))
        }
    }

    struct Cancel: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Stop a running plan; the round in flight is aborted and settled.")
        @OptionGroup var client: BrokerClientOptions
        @Argument(help: "The plan's hash.") var hash: String

        func execute() async throws {
            let s = try await client.call { broker in
                var request = Fedgate_V1_CancelPlanRequest()
                request.planHash = hash
                return try await broker.cancelPlan(request)
            }
            print(PlanView.summary(s))
        }
    }
}

/// `fedgate model list|pull|rollback`: the broker's model registry.
struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "model",
                                                    abstract: "List, pull, roll back and deploy model versions in the broker's registry; score rows with one at a silo.",
                                                    subcommands: [List.self, Pull.self, Rollback.self, Deploy.self, Deployments.self, Predict.self])

    struct List: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Model versions with their lineage, oldest first.")
        @OptionGroup var client: BrokerClientOptions
        @Flag(help: "Print JSON.") var json = false

        func execute() async throws {
            let versions = try await client.call { try await $0.listModels(Fedgate_V1_ListModelsRequest()).versions }
            if json {
                let rows: [[String: Any]] = versions.map { v in
                    ["version": v.version, "plan": v.planHash, "round": v.round, "content_sha256": v.contentSha256, "participants": v.participants,
                     "epsilon_per_silo": v.epsilonPerSilo, "metrics": v.metrics, "parent": v.parent,
                     "created_at": ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(v.createdAtMs) / 1000))]
                }
                print(String(decoding: try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
                return
            }
            if versions.isEmpty { print("no model versions yet"); return }
            for v in versions {
                let eps = v.epsilonPerSilo.sorted { $0.key < $1.key }.map { String(format: "%@ %.3f", $0.key, $0.value) }.joined(separator: ", ")
                print(String(format: "v%-3d plan %@… round %d  accuracy %.4f  parent %@  sha256 %@…", v.version, String(v.planHash.prefix(12)), v.round,
                             v.metrics["accuracy"] ?? .nan, v.parent == 0 ? "-" : "v\(v.parent)", String(v.contentSha256.prefix(12))))
                print("     participants \(v.participants.joined(separator: ", "))  ε \(eps)")
            }
        }
    }

    struct Pull: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Download a version's safetensors file, checked against its content hash.")
        @OptionGroup var client: BrokerClientOptions
        @Argument(help: "The version number.") var version: Int
        @Option(help: "Where to write the file.") var out: String

        func execute() async throws {
            guard version >= 1 else { throw ValidationError("VERSION: versions start at 1") }
            let (bytes, sha) = try await client.call { broker in
                var request = Fedgate_V1_PullModelRequest()
                request.version = UInt32(version)
                return try await RangedFetch.file(maximumBytes: TransportLimits().maximumPayloadBytes, what: "model version \(version)",
                                                  rangeBytes: TransportLimits().downloadRangeBytes) { offset, length in
                    request.offset = offset
                    request.length = length
                    return try await broker.pullModel(request) { try await RangedFetch.gather($0.messages, limit: length) }
                }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: out), options: .atomic)
            print("version \(version): \(bytes.count) bytes, SHA-256 \(sha), written to \(out)")
        }
    }

    struct Rollback: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Make an earlier version current again (admins); recorded as a new version.")
        @OptionGroup var client: BrokerClientOptions
        @Argument(help: "The version to return to.") var version: Int

        func execute() async throws {
            guard version >= 1 else { throw ValidationError("VERSION: versions start at 1") }
            let made = try await client.call { broker in
                var request = Fedgate_V1_RollbackModelRequest()
                request.version = UInt32(version)
                return try await broker.rollbackModel(request)
            }
            print("version \(made.version) is now current: the file of version \(made.parent) (sha256 \(made.contentSha256.prefix(12))…)")
        }
    }
}
