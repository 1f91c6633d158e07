import FedGateData
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// Registry versions deployed to this silo: installed on the broker's word (fetched and checked,
/// or taken from the silo's own folder when it still holds the file), kept for local use
/// (`fedgate model predict --config`), and, when the policy has `monitoring:`, watched on the
/// silo's fresh rows. What leaves: the version the silo runs (released without DP, like its
/// software version), and the monitoring releases (noisy counts and histograms, each a DP event
/// committed in the ledger before it leaves).
extension Gateway {
    /// The version this silo runs, ready to score.
    struct Deployed: Sendable {
        let version: Int
        let scorer: ModelScorer
        let watch: [String]
        let positions: [Int]
    }

    func deploy(_ task: Fedgate_V1_DeployTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) {
        Task {
            var message = Fedgate_V1_GatewayMessage()
            // The same task again (the broker did not get the answer before a reconnect): the same
            // answer, with the reference already released; nothing is spent twice.
            if let answered = self.answeredDeployments[task.deployment], answered.version == task.version, answered.error.isEmpty {
                message.deployed = answered
                reply.yield(message)
                return
            }
            message.deployed = await self.install(task, broker: broker)
            self.remember(message.deployed)
            reply.yield(message)
            // A fresh deployment is checked at once; a rollback's version waits for the schedule.
            if !task.rollback { await self.checkDeployed() }
        }
    }

    func remember(_ answer: Fedgate_V1_DeploymentAnswer) { answeredDeployments[answer.deployment] = answer }

    /// Installs the task's version (or, version 0, none) and answers with what the silo runs now.
    func install(_ task: Fedgate_V1_DeployTask, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async -> Fedgate_V1_DeploymentAnswer {
        var answer = Fedgate_V1_DeploymentAnswer()
        (answer.version, answer.deployment) = (task.version, task.deployment)
        let version = Int(task.version)
        do {
            guard let store = settings.deployments.map(DeployedModels.init(folder:)) else {
                throw GatewayError.deployment(version: version, problem: "this gateway keeps no deployed models (no deployments folder)")
            }
            guard version != 0 else {
                try store.install(0, sha256: "", bytes: nil, watch: [])
                deployed = nil
                logger.notice("deployed model removed: the silo runs none", metadata: ["silo": "\(siloID)", "rollback": "\(task.rollback)"])
                return answer
            }
            let bytes = try await deployedFile(task, store: store, broker: broker)
            let scorer: ModelScorer
            do { scorer = try ModelScorer(file: bytes) } catch { throw GatewayError.deployment(version: version, problem: "\(error)") }
            let positions = try Self.positions(of: task.watch, in: scorer, version: version)
            var reference: [Double]?
            if let monitoring = governor.policy.monitoring, !task.rollback {
                reference = try await releaseMonitoring(try referenceRows(scorer, version: version, minRows: monitoring.minRows),
                                                        version: version, positions: positions, monitoring)
            }
            try store.install(version, sha256: task.modelSha256, bytes: bytes, watch: task.watch)
            deployed = Deployed(version: version, scorer: scorer, watch: task.watch, positions: positions)
            if let reference, let z = governor.policy.monitoring?.noiseMultiplier { (answer.reference, answer.noiseMultiplier) = (reference, z) }
            logger.notice("model deployed", metadata: ["silo": "\(siloID)", "version": "\(version)", "stage": "\(PeerText.bounded(task.stage, limit: 16))",
                                                       "rollback": "\(task.rollback)", "monitored": "\(reference != nil)"])
            startMonitoring()
        } catch {
            answer.error = PeerText.bounded("\(error)", limit: 400)
            logger.error("deployment not installed", metadata: ["silo": "\(siloID)", "version": "\(version)", "error": "\(error)"])
        }
        return answer
    }

    /// The version's file: the silo's own copy when it still holds it (a rollback needs no
    /// download), else fetched from the broker; either way it must hash to the announced SHA-256.
    private func deployedFile(_ task: Fedgate_V1_DeployTask, store: DeployedModels,
                              broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> [UInt8] {
        let version = Int(task.version)
        if let kept = try store.kept(version, sha256: task.modelSha256) { return kept }
        var request = Fedgate_V1_ModelRequest()
        request.version = task.version
        return try await fetch(broker, request, what: "registry version \(version)", sha256: task.modelSha256, until: nil) {
            .deployment(version: version, problem: "the file's SHA-256 differs from the one the broker announced")
        }
    }

    /// The watched inputs' positions among the model's inputs.
    static func positions(of watch: [String], in scorer: ModelScorer, version: Int) throws -> [Int] {
        let names = scorer.inputNames
        return try watch.map { name in
            guard let i = names.firstIndex(of: name) else {
                throw GatewayError.deployment(version: version, problem: "the broker asks to watch '\(PeerText.bounded(name, limit: 64))', which is not an input of the model")
            }
            return i
        }
    }

    /// The silo's training rows as the model reads them: the reference its fresh rows are compared with.
    private func referenceRows(_ scorer: ModelScorer, version: Int, minRows: Int) throws -> (inputs: [[Float]], right: [Bool?]) {
        let rows: (inputs: [[Float]], right: [Bool?])
        if scorer.schema == nil, case .success(let (train, _)) = settings.data.numeric {
            rows = try scorer.outcomes(train)
        } else if let export = settings.data.export {
            let read = try scorer.outcomes(export.train, mapping: export.mapping, label: settings.freshLabel)
            rows = (read.inputs, read.right)
        } else {
            throw GatewayError.deployment(version: version, problem: "this silo's rows cannot be read as the model's inputs")
        }
        guard rows.inputs.count >= minRows else {
            throw GatewayError.deployment(version: version, problem: "only \(rows.inputs.count) training rows read as the model's inputs; monitoring.min_rows is \(minRows)")
        }
        return rows
    }

    /// Spends one monitoring release on the data set (committed before the values exist outside
    /// this function) and returns the noisy values.
    private func releaseMonitoring(_ rows: (inputs: [[Float]], right: [Bool?]), version: Int, positions: [Int],
                                   _ monitoring: SiloPolicy.Monitoring) async throws -> [Double] {
        let release = try MonitoringRelease(noiseMultiplier: monitoring.noiseMultiplier, watched: positions)
        let exact = release.counts(rows.inputs, right: rows.right)
        let key = SiloPolicy.monitoringKey(version: version)
        let round = try await governor.ledger.backend.entries(dataset: settings.dataset).filter { $0.planHash == key }.count
        try await reservations.spend(release.event, plan: key, round: UInt32(round), datasets: [settings.dataset])
        await refreshBudgetMetrics()
        // One stream per version and release when a test repeats its noise (a gateway uses the CSPRNG).
        var noise = releaseNoise(stream: 1_000_000 * version + round)
        return release.release(exact, noise: &noise)
    }

    /// Loads the version this silo runs from its folder (a restarted gateway keeps running it) and
    /// starts watching it.
    func loadDeployed() {
        guard let folder = settings.deployments else { return }
        do {
            guard let (record, bytes) = try DeployedModels(folder: folder).currentFile() else { return }
            let scorer = try ModelScorer(file: bytes)
            deployed = Deployed(version: record.version, scorer: scorer, watch: record.watch,
                                positions: try Self.positions(of: record.watch, in: scorer, version: record.version))
            startMonitoring()
        } catch {
            logger.error("the deployed model cannot be used", metadata: ["silo": "\(siloID)", "error": "\(error)"])
        }
    }

    func startMonitoring() {
        guard monitoringTask == nil, let every = governor.policy.monitoring?.everySeconds, settings.freshRows != nil else { return }
        monitoringTask = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int64(every * 1000)))
                await self.checkDeployed()
            }
        }
    }

    /// One monitoring check: the fresh rows, when they are a window not released before and hold
    /// at least `min_rows` rows the model reads, released (a DP event first) to the broker. Nothing
    /// is spent while no session could carry the release.
    func checkDeployed() async {
        guard !checking, let deployed, let monitoring = governor.policy.monitoring, let fresh = settings.freshRows,
              let folder = settings.deployments, let outbox = brokerOutbox else { return }
        checking = true
        defer { checking = false }
        let store = DeployedModels(folder: folder)
        do {
            guard let data = FileManager.default.contents(atPath: fresh.path) else { return }
            let window = TransferDigest.hex(data)
            guard window != (try store.current()?.lastWindow) else { return }
            let table = try Table.csv(String(decoding: data, as: UTF8.self), source: fresh.path)
            let rows = try deployed.scorer.outcomes(table, mapping: settings.data.export?.mapping ?? SiloMapping(), label: settings.freshLabel)
            guard rows.inputs.count >= monitoring.minRows else {
                logger.info("fresh rows not released: too few", metadata: ["silo": "\(siloID)", "rows": "\(rows.inputs.count)", "min_rows": "\(monitoring.minRows)"])
                return
            }
            var report = Fedgate_V1_MonitorReport()
            report.version = UInt32(deployed.version)
            report.counts = try await releaseMonitoring((rows.inputs, rows.right), version: deployed.version, positions: deployed.positions, monitoring)
            report.noiseMultiplier = monitoring.noiseMultiplier
            try store.released(window: window)
            var message = Fedgate_V1_GatewayMessage()
            message.monitor = report
            outbox.yield(message)
            logger.info("deployed model checked on fresh rows", metadata: ["silo": "\(siloID)", "version": "\(deployed.version)", "rows": "\(rows.inputs.count)"])
        } catch {
            logger.error("monitoring check failed", metadata: ["silo": "\(siloID)", "version": "\(deployed.version)", "error": "\(error)"])
        }
    }
}
