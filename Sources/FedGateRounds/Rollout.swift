import FedGateLearning
import Foundation

/// Staged rollout of registry versions to silos: which version each silo runs, each deployment's
/// stage and gate, the silos' monitoring checks against the gate, and the automatic rollback when a
/// check fails. A canary deployment goes to named silos; the same version goes to every silo
/// (`all`) only once every canary silo passed a check and none failed. When a check fails, every
/// silo that installed the deployment goes back to the version it ran before, and the rollback's
/// time (from the alert to the last silo back) is kept. Pure: the broker's coordinator does the I/O
/// (audit records, messages to gateways) its answers call for.
public struct Rollout: Sendable {
    public enum Stage: String, Sendable, CaseIterable { case canary, all }

    /// What a deployment's silos must show on their fresh rows: no watched column drifted (its
    /// population stability index over `maxPSI` with a p-value under `significance`, `DriftFigure`),
    /// and the accuracy at least `minAccuracy` where enough rows carry labels.
    public struct Gate: Sendable, Equatable {
        public var maxPSI: Double
        public var significance = 0.001
        public var minAccuracy: Double?
        /// The watched input columns, by name, and their positions among the model's inputs.
        public var watch: [String]
        public var positions: [Int]

        public init(maxPSI: Double, minAccuracy: Double?, watch: [String], positions: [Int]) {
            (self.maxPSI, self.minAccuracy, self.watch, self.positions) = (maxPSI, minAccuracy, watch, positions)
        }
    }

    /// One silo's monitoring check of a deployed version, judged by the deployment's gate.
    public struct Check: Sendable, Equatable {
        public let silo: String
        public let version: Int
        public let at: Date
        public let rows: Double
        public let accuracy: Double?
        /// Each watched column's drift against the silo's reference (its training rows).
        public let drift: [String: DriftFigure]
        /// Why the check failed (empty: passed).
        public let reasons: [String]
        public var passed: Bool { reasons.isEmpty }
    }

    public enum State: String, Sendable {
        /// Sent to the silos; not every silo has answered yet.
        case installing
        /// Every silo answered; checks come in.
        case monitoring
        /// A canary every silo of which passed a check: it may be promoted.
        case passed
        /// A canary whose version then went to every silo.
        case promoted
        /// A check failed: the silos are going back to their previous versions.
        case rollingBack = "rolling_back"
        case rolledBack = "rolled_back"
        /// A deployment to every silo that a later one to every silo replaced.
        case superseded
        /// A deployment to every silo whose check failed where there was no earlier version to go
        /// back to: the alert stands, the silos keep the version until a person acts.
        case alerted
    }

    public struct Alert: Sendable, Equatable {
        public let at: Date
        public let silo: String
        public let reasons: [String]
    }

    public struct Deployment: Sendable {
        public let id: Int
        public let version: Int
        public let stage: Stage
        public let silos: [String]
        public let gate: Gate
        public let by: String
        public let startedAt: Date
        /// The version each silo ran before (0: none), to go back to.
        public internal(set) var previous: [String: Int]
        public internal(set) var installed: Set<String> = []
        /// Why a silo did not install the version, or does not monitor it.
        public internal(set) var problems: [String: String] = [:]
        /// Each silo's reference histograms (its training rows, released with DP when it installed)
        /// and their noise's standard deviation.
        public internal(set) var references: [String: Reference] = [:]
        public internal(set) var checks: [Check] = []
        public internal(set) var state: State = .installing
        public internal(set) var alert: Alert?
        /// Silos still to confirm they are back on their previous version.
        public internal(set) var returning: Set<String> = []
        /// From the alert to the last silo back on its previous version.
        public internal(set) var rollbackSeconds: Double?

        /// Why this canary may not be promoted yet (empty: it may).
        public var promotionBlockers: [String] {
            guard state != .passed else { return [] }
            var out: [String] = []
            if state == .rollingBack || state == .rolledBack { out.append("it was rolled back (\(alert?.reasons.first ?? "a check failed"))") }
            for silo in silos {
                if let problem = problems[silo] { out.append("\(silo): \(problem)"); continue }
                if !installed.contains(silo) { out.append("\(silo) has not installed it yet") } else if !checks.contains(where: { $0.silo == silo && $0.passed }) {
                    out.append("\(silo) has not passed a monitoring check yet")
                }
            }
            return out
        }
    }

    public struct Reference: Sendable, Equatable {
        public let histograms: [[Double]]
        public let sigma: Double
        public init(histograms: [[Double]], sigma: Double) { (self.histograms, self.sigma) = (histograms, sigma) }
    }

    public struct Refusal: Error, Sendable, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// The version each silo runs (installed and confirmed); absent: none.
    public private(set) var running: [String: Int] = [:]
    /// Every deployment, oldest first.
    public private(set) var deployments: [Deployment] = []

    public init() {}

    /// The deployment in progress, if any (one at a time): installing, rolling back, or a canary
    /// being monitored. A deployment to every silo that installed is live, not in progress: it is
    /// monitored for as long as it runs, and a next version's canary may start beside it.
    public var inProgress: Deployment? {
        deployments.last { [.installing, .rollingBack].contains($0.state) || ($0.stage == .canary && $0.state == .monitoring) }
    }

    /// Starts deploying `version`. A canary goes to `silos` (named); `all` goes to `everyone` and
    /// needs the version's latest canary to have passed. Refused while another deployment is in progress.
    public mutating func deploy(version: Int, stage: Stage, silos named: [String], everyone: [String], gate: Gate,
                                by person: String, at: Date) throws -> Deployment {
        if let busy = inProgress {
            throw Refusal("deployment \(busy.id) of version \(busy.version) (\(busy.stage.rawValue)) is \(busy.state.rawValue.replacingOccurrences(of: "_", with: " ")); "
                          + "wait for it to pass or roll back")
        }
        var silos: [String]
        switch stage {
        case .canary:
            guard !named.isEmpty else { throw Refusal("a canary names its silos (--silos a,b)") }
            silos = named
        case .all:
            guard let canary = deployments.last(where: { $0.version == version && $0.stage == .canary }) else {
                throw Refusal("version \(version) had no canary: deploy it with --stage canary --silos … first")
            }
            let blockers = canary.promotionBlockers
            guard blockers.isEmpty else { throw Refusal("version \(version)'s canary has not passed: " + blockers.joined(separator: "; ")) }
            silos = everyone
            mark(canary.id, .promoted)
            for live in deployments where live.stage == .all && live.state == .monitoring { mark(live.id, .superseded) }
        }
        silos = Array(Set(silos)).sorted()
        guard !silos.isEmpty else { throw Refusal("no silo to deploy to") }
        var deployment = Deployment(id: deployments.count + 1, version: version, stage: stage, silos: silos, gate: gate, by: person, startedAt: at,
                                    previous: Dictionary(uniqueKeysWithValues: silos.map { ($0, running[$0] ?? 0) }))
        // The canary's silos already run the version: they install nothing again, and keep their
        // reference (spending nothing more) and the version they ran before the canary.
        if stage == .all, let canary = deployments.last(where: { $0.version == version && $0.stage == .canary }) {
            for silo in canary.installed where running[silo] == version && deployment.silos.contains(silo) {
                deployment.installed.insert(silo)
                deployment.previous[silo] = canary.previous[silo] ?? 0
                if let reference = canary.references[silo] { deployment.references[silo] = reference }
            }
        }
        if deployment.silos.allSatisfy(deployment.installed.contains) { deployment.state = .monitoring }
        deployments.append(deployment)
        return deployment
    }

    /// The silos a new deployment still has to send the version to.
    public static func toSend(_ deployment: Deployment) -> [String] { deployment.silos.filter { !deployment.installed.contains($0) } }

    /// What a silo's answer to a deployment or rollback meant.
    public enum Answer: Sendable, Equatable {
        case installed
        /// The silo could not install or monitor the version (it keeps its previous one, or monitors nothing).
        case problem(String)
        /// The silo is back on its previous version; `seconds` once the whole rollback is done.
        case returned(seconds: Double?)
        /// The silo installed the version after a check had failed: send it back to this version too.
        case mustReturn(to: Int)
    }

    /// A silo answered: it now runs `version` (with its reference histograms when it monitors), or
    /// could not (`problem`).
    public mutating func answered(silo: String, deployment id: Int, version: Int, reference: Reference?, problem: String?, at: Date) throws -> Answer {
        guard let i = deployments.firstIndex(where: { $0.id == id }), deployments[i].silos.contains(silo) else {
            throw Refusal("deployment \(id) sent nothing to \(silo)")
        }
        var d = deployments[i]
        defer { deployments[i] = d }
        if d.state == .rollingBack, version == d.version, version != d.previous[silo] {
            // Installed after the alert: it goes back too.
            guard problem == nil else { return .problem(problem ?? "") }
            setRunning(silo, version)
            d.installed.insert(silo)
            d.returning.insert(silo)
            return .mustReturn(to: d.previous[silo] ?? 0)
        }
        if d.state == .rollingBack || d.state == .rolledBack {
            guard problem == nil, version == d.previous[silo], d.returning.remove(silo) != nil else {
                throw Refusal("\(silo) answered version \(version) during the rollback of deployment \(d.id)\(problem.map { ": \($0)" } ?? "")")
            }
            setRunning(silo, version)
            guard d.returning.isEmpty, let alert = d.alert else { return .returned(seconds: nil) }
            d.state = .rolledBack
            d.rollbackSeconds = max(0, at.timeIntervalSince(alert.at))
            return .returned(seconds: d.rollbackSeconds)
        }
        guard version == d.version else { throw Refusal("\(silo) answered version \(version); deployment \(d.id) is of version \(d.version)") }
        if let problem {
            d.problems[silo] = problem
        } else {
            setRunning(silo, version)
            d.installed.insert(silo)
            if let reference {
                guard reference.histograms.count == d.gate.watch.count, reference.histograms.allSatisfy({ $0.count == MonitoringRelease.bins }),
                      reference.sigma.isFinite, reference.sigma > 0 else {
                    throw Refusal("\(silo)'s reference has \(reference.histograms.count) histograms and noise σ \(reference.sigma); the deployment watches "
                                  + "\(d.gate.watch.count) columns of \(MonitoringRelease.bins) bins, with noise")
                }
                d.references[silo] = reference
            } else {
                d.problems[silo] = "does not monitor deployed models (no monitoring: in its policy)"
            }
        }
        if d.state == .installing, d.silos.allSatisfy({ d.installed.contains($0) || d.problems[$0] != nil }) { d.state = .monitoring }
        return problem.map { .problem($0) } ?? .installed
    }

    /// What a check led to.
    public struct Verdict: Sendable {
        public let check: Check
        /// The canary passed with this check.
        public let canaryPassed: Bool
        /// The check failed: each silo to send back, with the version it goes back to (0: none);
        /// empty when a live version had nothing before it (`alerted`).
        public let rollback: [String: Int]?
    }

    /// A silo's monitoring release of the version it runs, judged by its deployment's gate.
    public mutating func checked(silo: String, version: Int, figures: MonitorFigures, sigma: Double, at: Date) throws -> Verdict {
        guard running[silo] == version, let i = deployments.lastIndex(where: { $0.version == version && $0.installed.contains(silo) }) else {
            throw Refusal("\(silo) reported on version \(version), which no deployment installed there")
        }
        var d = deployments[i]
        defer { deployments[i] = d }
        guard [.installing, .monitoring, .passed, .promoted, .alerted].contains(d.state) else {
            throw Refusal("deployment \(d.id) is \(d.state.rawValue.replacingOccurrences(of: "_", with: " ")); \(silo)'s check is not judged")
        }
        guard let reference = d.references[silo] else { throw Refusal("\(silo) sent no reference for deployment \(d.id)") }
        guard figures.histograms.count == reference.histograms.count, sigma.isFinite, sigma > 0 else {
            throw Refusal("\(silo)'s check has \(figures.histograms.count) histograms and noise σ \(sigma); its reference has \(reference.histograms.count), with noise")
        }
        var drift: [String: DriftFigure] = [:]
        for (k, column) in d.gate.watch.enumerated() {
            drift[column] = DriftFigure(reference: reference.histograms[k], referenceSigma: reference.sigma, current: figures.histograms[k], currentSigma: sigma)
        }
        var reasons = drift.filter { $0.value.drifted(maxPSI: d.gate.maxPSI, significance: d.gate.significance) }.sorted { $0.value.psi > $1.value.psi }.map {
            "drift: \($0.key) has PSI " + String(format: "%.3f > %.3f (p %.1e)", $0.value.psi, d.gate.maxPSI, $0.value.pValue)
        }
        if let floor = d.gate.minAccuracy, let accuracy = figures.accuracy, accuracy < floor,
           let p = figures.accuracyPValue(floor: floor, sigma: sigma), p < d.gate.significance {
            reasons.append(String(format: "quality: accuracy %.4f < %.4f on %.0f labelled rows (p %.1e)", accuracy, floor, figures.labelled, p))
        }
        let check = Check(silo: silo, version: version, at: at, rows: figures.rows, accuracy: figures.accuracy, drift: drift, reasons: reasons)
        d.checks.append(check)
        guard check.passed else {
            d.alert = Alert(at: at, silo: silo, reasons: reasons)
            guard d.state != .alerted else { return Verdict(check: check, canaryPassed: false, rollback: [:]) }
            // The silos running this deployment's version go back; one that moved on since stays. A
            // live version goes back only where a version ran before it: none is no remedy there.
            var back = Dictionary(uniqueKeysWithValues: d.installed.filter { running[$0] == d.version }.map { ($0, d.previous[$0] ?? 0) })
            if d.stage == .all { back = back.filter { $0.value != 0 } }
            if back.isEmpty, d.stage == .all {
                d.state = .alerted
                return Verdict(check: check, canaryPassed: false, rollback: [:])
            }
            d.state = .rollingBack
            d.returning = Set(back.keys)
            if d.returning.isEmpty { (d.state, d.rollbackSeconds) = (.rolledBack, 0) }
            return Verdict(check: check, canaryPassed: false, rollback: back)
        }
        var canaryPassed = false
        if d.stage == .canary, d.state == .monitoring, d.promotionBlockers.isEmpty {
            d.state = .passed
            canaryPassed = true
        }
        return Verdict(check: check, canaryPassed: canaryPassed, rollback: nil)
    }

    /// What a silo that (re)connects still has to be sent: the version of a deployment it has not
    /// answered, or the version a rollback sends it back to.
    public func owed(to silo: String) -> (version: Int, rollback: Bool)? {
        guard let d = deployments.last(where: { $0.silos.contains(silo) && [.installing, .rollingBack].contains($0.state) }) else { return nil }
        if d.state == .rollingBack { return d.returning.contains(silo) ? (d.previous[silo] ?? 0, true) : nil }
        return d.installed.contains(silo) || d.problems[silo] != nil ? nil : (d.version, false)
    }

    private mutating func setRunning(_ silo: String, _ version: Int) {
        if version == 0 { running.removeValue(forKey: silo) } else { running[silo] = version }
    }

    private mutating func mark(_ id: Int, _ state: State) {
        if let i = deployments.firstIndex(where: { $0.id == id }) { deployments[i].state = state }
    }
}
