import Crypto
import FedGateAggregation
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import FedGateStore
import FedGateTensors
import FedGateTransport
import Foundation
import Logging
import FedGateRounds

/// Where a plan stands, as `plan status` and `plan watch` show it.
extension BrokerCoordinator {
    public struct PlanStatus: Sendable {
        public enum State: String, Sendable { case running, finished, failed, cancelled }
        public struct Round: Sendable {
            public let number: Int
            public let state: String
            public let participants: [String]
            public let refused: [String: [String]]
            /// Accuracy of the previous global model on the participants' held-out rows (their reports, weighted).
            public let reportedAccuracy: Double?
            public let reason: String?
            /// Updates the round left out as likely attacks.
            public var flagged: [AttackFlag] = []
            /// Update bytes the round took, and what they would have been as float32.
            public var bytesIn = 0
            public var rawBytes = 0
            /// The silos the round offered (all eligible ones, or the plan's sample of them).
            public var sampled: [String] = []
        }
        /// A silo flagged in enough rounds of the plan to raise an alert, and those rounds.
        public struct AttackAlert: Sendable, Equatable {
            public let silo: String
            public let rounds: [Int]
        }
        public var state: State
        public var rounds: [Round] = []
        public var reason: String?
        /// The broker's mirror of each silo's privacy spent on this plan: the plan's DP-SGD event for
        /// every committed round the silo took part in, composed (each silo's ledger is the truth;
        /// the mirror is for following a plan live and for planning).
        public var epsilonMirror: [String: Double] = [:]
        /// The current global model's parameters and layer sizes.
        public var parameters: [Float] = []
        public var layerSizes: [Int] = []
        public var bytesIn = 0
        public var bytesOut = 0
        /// The final model's federated evaluation, the plan's gate on it, and the version it became.
        public var evaluation: EvaluationSummary?
        public var gate: GateDecision?
        public var modelVersion: Int?
        /// Silos flagged as likely attackers round after round (`attack.alert`).
        public var alerts: [AttackAlert] = []
        /// A statistics plan's pooled figures and the silos whose releases they pool.
        public var analytics: (silos: [String], columns: [String], result: AnalyticsResult)?
        /// The round in flight: its number, phase, who accepted and who refused it so far.
        public var current: (round: Int, phase: String, accepted: [String], refused: [String: [String]])?
        /// Silos that refused the plan, with their reasons (first refusal per silo).
        public var refusals: [String: [String]] {
            var out: [String: [String]] = [:]
            for (silo, reasons) in current?.refused ?? [:] { out[silo] = reasons }
            for r in rounds { for (silo, reasons) in r.refused where out[silo] == nil { out[silo] = reasons } }
            return out
        }
    }

    /// The final evaluation of a plan's model: who was asked and what they answered.

    public func status(_ hash: String) -> PlanStatus? {
        guard var status = plans[hash] else { return nil }
        if let e = evaluations[hash] {
            status.current = (e.state.round, "evaluating", e.state.expected.sorted(), [:])
        } else if let a = admissionStatus(hash) {
            status.current = a
        } else if let r = active[hash] {
            let phase = switch r.machine.progress.phase { case .offering: "offering"; case .training: "training"; case .closed: "aggregating" }
            status.current = (r.number, phase, r.machine.progress.accepted.sorted(), r.machine.progress.refused)
        } else if let wait = slotStatus(hash) {
            let next = (status.rounds.last?.number ?? 0) + 1
            status.current = (next, "waiting for a round slot (\(wait.position) in line; \(wait.limit) at once)", [], [:])
        }
        return status
    }

}
