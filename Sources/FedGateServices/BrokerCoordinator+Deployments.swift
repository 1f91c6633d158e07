import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGateProto
import FedGateRounds
import FedGateStore
import Foundation

/// Deployments of registry versions to silos (`Rollout` decides; this does the I/O): a canary to
/// named silos, promotion to every connected silo once the canary passed, the silos' monitoring
/// checks judged as they arrive, and on a failed check an alert and the automatic rollback, timed
/// from the alert to the last silo back. Every step is audited (`deploy.start`, `deploy.answer`,
/// `monitor.check`, `deploy.alert`, `deploy.rolled_back`); a restarted broker replays them.
extension BrokerCoordinator {
    /// What `fedgate model deploy` asks for.
    public struct DeployRequest: Sendable {
        public var version: Int
        public var stage: Rollout.Stage
        public var silos: [String]
        /// The gate (nil, empty: 0.25, the plan's `evaluation.min_accuracy`, every input). A promotion
        /// to all keeps its canary's gate and names none of these.
        public var maxPSI: Double?
        public var minAccuracy: Double?
        public var watch: [String]
        public init(version: Int, stage: Rollout.Stage, silos: [String], maxPSI: Double? = nil, minAccuracy: Double? = nil, watch: [String] = []) {
            (self.version, self.stage, self.silos, self.maxPSI, self.minAccuracy, self.watch) = (version, stage, silos, maxPSI, minAccuracy, watch)
        }
    }

    /// The most inputs a deployment watches: each one adds to every monitoring release's noise.
    public static let maximumWatched = 16

    /// Starts a deployment (admins): checked against the registry, the version's model and the
    /// rollout's rules, audited, and sent to the silos that do not run the version yet.
    public func deploy(_ request: DeployRequest, by person: String) async throws -> Rollout.Deployment {
        let (version, bytes) = try await registryFile(request.version)
        let gate = request.stage == .all ? try promotionGate(request) : try await canaryGate(request, version, bytes)
        // The rollout decides with no suspension, so two admins' deployments cannot both begin.
        let before = rollout
        let deployment: Rollout.Deployment
        do {
            deployment = try rollout.deploy(version: request.version, stage: request.stage, silos: request.silos, everyone: gateways.connected,
                                            gate: gate, by: person, at: now())
        } catch let refusal as Rollout.Refusal { throw BrokerError.deployment(refusal.description) }
        deploymentFiles[request.version] = (version.contentSHA256, bytes.count)
        do {
            try await store.audit(.deploymentStarted(.init(deployment: deployment.id, version: deployment.version, stage: deployment.stage.rawValue,
                                                           silos: deployment.silos, maxPSI: gate.maxPSI, significance: gate.significance,
                                                           minAccuracy: gate.minAccuracy, watch: gate.watch, positions: gate.positions)),
                                  actor: person, subject: "deployment \(deployment.id)", at: now())
        } catch {
            // Not recorded, so not begun (nothing was sent yet): taken back. What arrived for other
            // deployments while the record was being written is lost with it, and arrives again.
            if rollout.deployments.last?.id == deployment.id { rollout = before }
            throw error
        }
        logger.notice("deployment started", metadata: ["deployment": "\(deployment.id)", "version": "\(deployment.version)",
                                                        "stage": "\(deployment.stage.rawValue)", "silos": "\(deployment.silos)"])
        for silo in Rollout.toSend(deployment) { sendDeployTask(to: silo, version: deployment.version, rollback: false, deployment) }
        return deployment
    }

    /// A promotion keeps its canary's gate: the canary silos' references were released for its
    /// watched inputs, and what passed there is what every silo is held to.
    private func promotionGate(_ request: DeployRequest) throws -> Rollout.Gate {
        guard request.maxPSI == nil, request.minAccuracy == nil, request.watch.isEmpty else {
            throw BrokerError.deployment("--stage all keeps the canary's gate (watched inputs, PSI, accuracy); name them on the canary")
        }
        guard let canary = rollout.deployments.last(where: { $0.version == request.version && $0.stage == .canary }) else {
            throw BrokerError.deployment("version \(request.version) had no canary: deploy it with --stage canary --silos … first")
        }
        return canary.gate
    }

    /// A registry version and its file, read once.
    private func registryFile(_ number: Int) async throws -> (ModelVersion, [UInt8]) {
        guard let version = try await store.modelVersions().first(where: { $0.version == number }) else {
            throw BrokerError.deployment("no model version \(number) in the registry")
        }
        guard let bytes = try await store.modelContent(sha256: version.contentSHA256) else {
            throw BrokerError.deployment("version \(number)'s file is missing from the store")
        }
        return (version, bytes)
    }

    /// A canary's gate, from the request and the version's model (its inputs) and plan (its accuracy floor).
    private func canaryGate(_ request: DeployRequest, _ version: ModelVersion, _ bytes: [UInt8]) async throws -> Rollout.Gate {
        let scorer: ModelScorer
        do { scorer = try ModelScorer(file: bytes) } catch { throw BrokerError.deployment("version \(request.version) cannot be deployed: \(error)") }
        let watch = request.watch.isEmpty ? scorer.inputNames : request.watch
        guard watch.count <= Self.maximumWatched else {
            throw BrokerError.deployment("the model has \(watch.count) inputs; name at most \(Self.maximumWatched) to watch with --watch (each adds to every monitoring release's noise)")
        }
        let positions = try watch.map { name in
            guard let i = scorer.inputNames.firstIndex(of: name) else {
                throw BrokerError.deployment("--watch: '\(PeerText.bounded(name, limit: 64))' is not an input of version \(request.version) (its inputs: \(scorer.inputNames.prefix(40).joined(separator: ", ")))")
            }
            return i
        }
        let maxPSI = request.maxPSI ?? 0.25
        guard maxPSI.isFinite, maxPSI > 0 else { throw BrokerError.deployment("--max-psi must be a number > 0 (0.25 is the usual 'significant shift')") }
        if let absent = request.silos.first(where: { !gateways.isConnected($0) }) {
            throw BrokerError.deployment("canary silo \(PeerText.bounded(absent, limit: 64)) is not connected")
        }
        var minAccuracy = request.minAccuracy
        if minAccuracy == nil { minAccuracy = try await planGate(version.planHash) }
        return Rollout.Gate(maxPSI: maxPSI, minAccuracy: minAccuracy, watch: watch, positions: positions)
    }

    /// The version's plan's `evaluation.min_accuracy`, if the store still holds the plan.
    private func planGate(_ hash: String) async throws -> Double? {
        guard let run = try await store.planRuns().first(where: { $0.planHash == hash }) else { return nil }
        return (try? TrainingPlan.parse(run.planYAML, file: "plan \(hash.prefix(12))"))?.minAccuracy
    }

    func sendDeployTask(to silo: String, version: Int, rollback: Bool, _ deployment: Rollout.Deployment) {
        var task = Fedgate_V1_DeployTask()
        task.version = UInt32(version)
        task.stage = deployment.stage.rawValue
        task.watch = deployment.gate.watch
        task.rollback = rollback
        task.deployment = UInt32(deployment.id)
        if version != 0 {
            guard let file = deploymentFiles[version] else {
                Task { await self.sendAfterLookingUp(silo, version: version, rollback: rollback, deployment) }
                return
            }
            (task.modelSha256, task.modelBytes) = (file.sha256, UInt64(file.bytes))
        }
        send(.deploy(task), to: [silo])
    }

    /// A version sent back to whose file the broker has not read yet: looked up in the registry first.
    private func sendAfterLookingUp(_ silo: String, version: Int, rollback: Bool, _ deployment: Rollout.Deployment) async {
        do {
            let (v, bytes) = try await registryFile(version)
            deploymentFiles[version] = (v.contentSHA256, bytes.count)
            sendDeployTask(to: silo, version: version, rollback: rollback, deployment)
        } catch {
            logger.error("a deployment's version cannot be read from the registry", metadata: ["version": "\(version)", "silo": "\(silo)", "error": "\(error)"])
        }
    }

    /// A silo that (re)connects gets what a deployment still owes it.
    func resendOwedDeployment(to silo: String) {
        guard let owed = rollout.owed(to: silo), let deployment = rollout.deployments.last(where: { $0.silos.contains(silo) }) else { return }
        sendDeployTask(to: silo, version: owed.version, rollback: owed.rollback, deployment)
    }

    /// Whether `silo` may download registry version `version`: a deployment sent it there.
    func mayDownload(_ silo: String, version: Int) -> Bool {
        heardFrom(silo)
        return rollout.deployments.contains { $0.silos.contains(silo) && ($0.version == version || $0.previous[silo] == version) }
    }

    /// A silo's answer to a deployment or a rollback.
    public func deployed(_ answer: Fedgate_V1_DeploymentAnswer, from silo: String, token: UInt64) async {
        heartbeat(silo: silo, token: token)
        let problem = answer.error.isEmpty ? nil : PeerText.bounded(answer.error, limit: 400)
        let id = Int(answer.deployment)
        do {
            guard let sent = rollout.deployments.first(where: { $0.id == id }) else { throw Rollout.Refusal("deployment \(id) sent nothing to \(silo)") }
            let rollback = [.rollingBack, .rolledBack].contains(sent.state)
            var reference: Rollout.Reference?
            if !answer.reference.isEmpty {
                let figures = try MonitorFigures(released: answer.reference, columns: sent.gate.watch.count)
                reference = Rollout.Reference(histograms: figures.histograms, sigma: try Self.sigma(answer.noiseMultiplier, sent.gate))
            }
            let outcome = try rollout.answered(silo: silo, deployment: id, version: Int(answer.version), reference: reference, problem: problem, at: now())
            try await store.audit(.deploymentAnswered(.init(deployment: id, version: Int(answer.version), rollback: rollback,
                                                            problem: problem, reference: reference?.histograms, sigma: reference?.sigma)),
                                  actor: silo, subject: silo, at: now())
            // The deployment as the answer left it (a finished rollback carries its time).
            guard let current = rollout.deployments.first(where: { $0.id == id }) else { return }
            if case .returned(let seconds?) = outcome { try await rolledBack(current, seconds: seconds) }
            if case .mustReturn(let previous) = outcome { sendDeployTask(to: silo, version: previous, rollback: true, current) }
        } catch {
            await refuseMonitoring(silo, "deployment answer for version \(answer.version)", error)
        }
    }

    private func rolledBack(_ d: Rollout.Deployment, seconds: Double) async throws {
        metrics.set("fedgate_rollback_seconds", seconds)
        logger.notice("deployment rolled back: every silo is on its previous version", metadata: [
            "deployment": "\(d.id)", "version": "\(d.version)", "rollback_seconds": "\(String(format: "%.3f", seconds))"])
        try await store.audit(.deploymentRolledBack(.init(deployment: d.id, version: d.version, seconds: seconds)),
                              actor: settings.brokerID, subject: "deployment \(d.id)", at: now())
    }

    /// A silo's monitoring release, judged by its deployment's gate; a failed check raises the
    /// alert and sends every silo of the deployment back to the version it ran before.
    public func monitored(_ report: Fedgate_V1_MonitorReport, from silo: String, token: UInt64) async {
        heartbeat(silo: silo, token: token)
        let version = Int(report.version)
        do {
            guard let d = rollout.deployments.last(where: { $0.version == version && $0.installed.contains(silo) }) else {
                throw Rollout.Refusal("no deployment installed version \(version) at \(silo)")
            }
            let figures = try MonitorFigures(released: report.counts, columns: d.gate.watch.count)
            let sigma = try Self.sigma(report.noiseMultiplier, d.gate)
            let verdict = try rollout.checked(silo: silo, version: version, figures: figures, sigma: sigma, at: now())
            let check = verdict.check
            metrics.count("fedgate_monitor_checks_total", [("outcome", check.passed ? "passed" : "failed")])
            try await store.audit(.monitorChecked(.init(deployment: d.id, version: version, counts: report.counts, sigma: sigma, accuracy: check.accuracy,
                                                        psi: check.drift.mapValues(\.psi), reasons: check.reasons, pValues: check.drift.mapValues(\.pValue))),
                                  actor: silo, subject: silo, at: now())
            if verdict.canaryPassed { logger.notice("canary passed: it may be promoted", metadata: ["deployment": "\(d.id)", "version": "\(version)"]) }
            if let back = verdict.rollback { try await alert(d, check: check, back: back) }
        } catch {
            await refuseMonitoring(silo, "monitoring report for version \(version)", error)
        }
    }

    private func alert(_ d: Rollout.Deployment, check: Rollout.Check, back: [String: Int]) async throws {
        for kind in Set(check.reasons.map { $0.hasPrefix("drift") ? "drift" : "quality" }) { metrics.count("fedgate_deployment_alerts_total", [("kind", kind)]) }
        logger.error("deployment alert: rolling back", metadata: ["deployment": "\(d.id)", "version": "\(d.version)", "silo": "\(check.silo)",
                                                                  "reasons": "\(check.reasons)", "back": "\(back)"])
        try await store.audit(.deploymentAlert(.init(deployment: d.id, version: d.version, reasons: check.reasons, back: back)),
                              actor: settings.brokerID, subject: check.silo, at: now())
        guard let current = rollout.deployments.first(where: { $0.id == d.id }) else { return }
        if current.state == .alerted {
            logger.error("a live version failed its gate and no version ran before it: it stays until a person acts", metadata: ["deployment": "\(d.id)"])
        }
        if current.state == .rolledBack { try await rolledBack(current, seconds: current.rollbackSeconds ?? 0) }
        for silo in current.returning.sorted() { sendDeployTask(to: silo, version: back[silo] ?? 0, rollback: true, current) }
    }

    /// σ of a silo's monitoring release under `gate` (`MonitoringRelease.sigma`), for a noise
    /// multiplier a policy could give.
    static func sigma(_ noiseMultiplier: Double, _ gate: Rollout.Gate) throws -> Double {
        guard noiseMultiplier.isFinite, noiseMultiplier >= 0.5 else {
            throw Rollout.Refusal("the release's noise multiplier \(noiseMultiplier) is not one a policy allows (≥ 0.5)")
        }
        return try MonitoringRelease(noiseMultiplier: noiseMultiplier, watched: gate.positions).sigma
    }

    private func refuseMonitoring(_ silo: String, _ what: String, _ error: any Error) async {
        let reason = PeerText.bounded("\(what): \(error)", limit: 400)
        logger.warning("refused from a silo", metadata: ["silo": "\(silo)", "reason": "\(reason)"])
        try? await store.audit(.refused(.monitor, .init(reason: reason)), actor: settings.brokerID, subject: silo, at: now())
    }

    /// The rollout as the audit trail left it: a restarted or standby broker goes on from there.
    func replayRollout(_ records: [AuditRecord]) {
        var replayed = Rollout()
        for record in records {
            do {
                switch try? AuditEvent(action: record.action, payload: record.payload) {
                case .deploymentStarted(let s)?:
                    guard let stage = Rollout.Stage(rawValue: s.stage) else { continue }
                    var gate = Rollout.Gate(maxPSI: s.maxPSI, minAccuracy: s.minAccuracy, watch: s.watch, positions: s.positions)
                    gate.significance = s.significance
                    _ = try replayed.deploy(version: s.version, stage: stage, silos: s.silos, everyone: s.silos, gate: gate, by: record.actor, at: record.at)
                case .deploymentAnswered(let a)?:
                    var reference: Rollout.Reference?
                    if let histograms = a.reference, let sigma = a.sigma { reference = Rollout.Reference(histograms: histograms, sigma: sigma) }
                    _ = try replayed.answered(silo: record.subject, deployment: a.deployment, version: a.version, reference: reference, problem: a.problem, at: record.at)
                case .monitorChecked(let c)?:
                    guard let d = replayed.deployments.last(where: { $0.version == c.version && $0.installed.contains(record.subject) }) else { continue }
                    let figures = try MonitorFigures(released: c.counts, columns: d.gate.watch.count)
                    _ = try replayed.checked(silo: record.subject, version: c.version, figures: figures, sigma: c.sigma, at: record.at)
                default:
                    continue
                }
            } catch {
                logger.warning("a deployment record does not replay", metadata: ["seq": "\(record.seq)", "action": "\(record.action)", "error": "\(error)"])
            }
        }
        rollout = replayed
    }

    /// Which version each silo runs and every deployment, for `fedgate model deployments`.
    public var deployments: Rollout { rollout }
}
