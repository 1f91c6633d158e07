import FedGateLearning
import FedGatePolicy
import FedGateRounds
import FedGateStore
import Foundation

extension BrokerCoordinator {
    /// Where a plan's run starts: from round 1, or after a restart from the store's checkpoint.
    struct Resume {
        var global: Network?
        var standardisation: Standardisation?
        var participants = Set<String>()
        var lastCommitted: Int?
        var nextRound = 1
        /// SCAFFOLD: the server's control variate, from the checkpoint's file.
        var scaffoldControl: [Float]?
        static let start = Resume()

        static func encode(_ s: Standardisation, classes: Int) throws -> String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return String(decoding: try encoder.encode(StandardisationCheckpoint(s, classes: classes)), as: UTF8.self)
        }

        /// The checkpoint's model and standardisation, checked against the plan's model kind.
        static func checkpoint(_ c: PlanRun.Checkpoint, of plan: String, content: [UInt8], kind: ModelKind) throws -> (Network, Standardisation) {
            guard let saved = try? JSONDecoder().decode(StandardisationCheckpoint.self, from: Data(c.standardisation.utf8)) else {
                throw BrokerError.checkpointUnusable(plan: plan, round: c.round, problem: "has no readable standardisation")
            }
            if let problem = saved.problem { throw BrokerError.checkpointUnusable(plan: plan, round: c.round, problem: "standardisation \(problem)") }
            let inputs = BrokerCoordinator.split(saved.standardisation, kind).features.means.count
            let dimension = try Network.parameterCount(kind: kind, inputs: inputs, classes: saved.classes)
            let parameters: [Float]
            do { parameters = try ModelPayload.modelParameters(content, dimension: dimension) } catch {
                throw BrokerError.checkpointUnusable(plan: plan, round: c.round, problem: "is not this plan's model: \(error)")
            }
            let network = try Network(kind: kind, inputs: inputs, classes: saved.classes, parameters: parameters)
            return (network, saved.standardisation)
        }
    }
}

/// A plan's run read back from the store (after a restart, or on taking the lead from another
/// broker): a round left in flight is recorded as aborted (its silos released their reservations
/// when their streams ended; `RunRecovery` says which and why), the rounds so far become the plan's
/// status, and the last committed round's checkpoint its model. Every change is written and audited
/// before the run goes on.
struct PlanRecovery: Sendable {
    let store: any BrokerStore
    let brokerID: String
    let wallClock: WallClock
    let fence: LeaseFence?

    /// What a recovered run goes on from.
    struct Recovered: Sendable {
        let plan: TrainingPlan
        let status: BrokerCoordinator.PlanStatus
        let resume: BrokerCoordinator.Resume
    }

    /// The run, ready to go on; nil when its stored plan no longer parses (the run is then recorded failed).
    func recover(_ run: PlanRun) async throws -> Recovered? {
        let hash = run.planHash
        let plan: TrainingPlan
        do { plan = try TrainingPlan.parse(run.planYAML, file: "plan \(hash.prefix(12))… in the store") } catch {
            try await store.finishPlanRun(planHash: hash, state: .failed, reason: "the stored plan no longer parses: \(error)", fence: fence,
                                          at: wallClock.now(), actor: brokerID)
            return nil
        }
        var status = BrokerCoordinator.PlanStatus(state: .running)
        var resume = BrokerCoordinator.Resume()
        let stored = try await store.rounds(planHash: hash)
        let recovery = RunRecovery(rounds: stored.map { .init(number: $0.number, stage: RoundStage($0.state), survivors: $0.survivors) })
        for round in recovery.abandoned {
            try await store.advanceRound(planHash: hash, number: round.number, to: .aborted, survivors: [], at: wallClock.now(), actor: brokerID)
            try await store.audit(.roundAbandoned(.init(round: round.number, reason: round.reason)), actor: brokerID, subject: hash, at: wallClock.now())
        }
        for record in stored {
            let reason = recovery.abandoned.first { $0.number == record.number }?.reason
            let state = reason == nil ? record.state : .aborted
            status.rounds.append(.init(number: record.number, state: state.rawValue, participants: state == .committed ? record.survivors : [],
                                       refused: [:], reportedAccuracy: nil, reason: reason))
        }
        resume.participants = recovery.participants
        resume.nextRound = recovery.nextRound
        if let c = run.checkpoint {
            guard let content = try await store.modelContent(sha256: c.contentSHA256) else {
                throw BrokerError.checkpointUnusable(plan: hash, round: c.round, problem: "is missing from the store")
            }
            let (global, standardisation) = try BrokerCoordinator.Resume.checkpoint(c, of: hash, content: content, kind: try ModelKind(parsing: plan.model))
            (resume.global, resume.standardisation, resume.lastCommitted) = (global, standardisation, c.round)
            if plan.scaffold == true {
                do { resume.scaffoldControl = try ModelPayload.scaffoldControl(content, dimension: global.parameters.count) } catch {
                    throw BrokerError.checkpointUnusable(plan: hash, round: c.round, problem: "has an unreadable SCAFFOLD control variate: \(error)")
                }
            }
            status.parameters = global.parameters
            status.layerSizes = global.layerSizes
        }
        try await store.audit(.planResumed(.init(nextRound: resume.nextRound, checkpointRound: resume.lastCommitted)), actor: brokerID,
                              subject: hash, at: wallClock.now())
        return Recovered(plan: plan, status: status, resume: resume)
    }
}
