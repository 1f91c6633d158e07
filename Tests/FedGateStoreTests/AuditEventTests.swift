import Foundation
import Testing
@testable import FedGateStore

/// Audit records are written and read as typed events: what a writer records is what an export,
/// the compliance report and the ledger replay read back, and a record that does not fit its action
/// is named instead of read as zeros.
@Suite("Typed audit events")
struct AuditEventTests {
    static let samples: [AuditEvent] = [
        .budgetSet(.init(DatasetBudget(name: "cohort", delta: 1e-5, perPlanCap: 2, windowDays: 30, windowCap: 4, lifetimeCap: 10))),
        .budgetSet(.init(DatasetBudget(name: "cohort", delta: 1e-6, perPlanCap: 1))),
        .budgetReserved(.init(id: "r1", dataset: "cohort", plan: "ab12", round: 3, event: #"{"kind":"gaussian","sigma":1.1}"#)),
        .budgetSettled(.init(id: "r1", state: .committed)),
        .budgetSettled(.init(id: "r1", state: .released)),
        .consentAdded(.init(id: "c1", dataset: "cohort", purpose: "research", legalBasis: "GDPR 9(2)(j)", scope: "all", validFrom: 1_700_000_000,
                            validUntil: nil)),
        .consentWithdrawn(.init(id: "c1")),
        .policyDecision(.init(silo: "hospital-a", policy: "p0", plan: "ab12", outcome: "refused", reasons: ["epsilon: 9 > 5"])),
        .planApproval(approved: true, .init(plan: "ab12", silo: "hospital-a")),
        .planApproval(approved: false, .init(plan: "ab12", silo: "hospital-a")),
        .partyEnrolled(.init(kind: "silo", region: "eu-west", jurisdiction: "EU", certificateSHA256: "ff00")),
        .enrolmentRedeemed(.init(kind: "silo", region: "eu-west", jurisdiction: "EU", certificateSHA256: "ff00")),
        .enrolmentInvited(.init(region: "eu-west", jurisdiction: "EU", expiresAt: 1_700_000_600.5)),
        .partyRevoked,
        .revoked(.init(kind: "identity", value: "hospital-b", reason: "left")),
        .revoked(.init(kind: "sha256", value: "ee11", reason: "key lost")),
        .certificateRenewed(.init(notAfter: Date(timeIntervalSince1970: 1_800_000_000), sha256: "aa")),
        .planSubmitted(.init(purpose: "research", rounds: 10, strategy: "fedavg")),
        .planEnded(.finished, .init(reason: nil)),
        .planEnded(.failed, .init(reason: "quorum never met")),
        .planCancelled(.init(state: "running")),
        .planResumed(.init(nextRound: 4, checkpointRound: 3)),
        .planResumed(.init(nextRound: 1, checkpointRound: nil)),
        .roundPlanned(.init(round: 1, sampled: ["a", "b"])),
        .roundAdvanced(.training, .init(round: 1, survivors: ["a"], checkpointSHA256: nil)),
        .roundAdvanced(.committed, .init(round: 1, survivors: ["a", "b"], checkpointSHA256: "cc")),
        .roundAbandoned(.init(round: 2, reason: "2 accepted, quorum is 3")),
        .roundTraffic(.init(round: 2, bytesIn: 3290, rawBytes: 13000, codec: "q8")),
        .roundTraffic(.init(round: 3, bytesIn: 13000, rawBytes: 13000, codec: nil)),
        .leaseTaken(.init(BrokerLease(holder: "broker-1", term: 4, expiresAt: Date(timeIntervalSince1970: 1_700_000_003)))),
        .modelVersioned(.init(version: 2, round: 10, contentSHA256: "dd", epsilonPerSilo: ["a": 1.25])),
        .modelGated(.init(round: 10, passed: false, reasons: ["accuracy 0.7 < 0.9"], accuracy: 0.7, fairnessDelta: nil,
                          silos: ["a": .init(accuracy: 0.7, examples: 40, epsilon: 1.2, epsilonCap: 5, personalisedAccuracy: 0.8)],
                          failures: ["b": "no evaluation by the deadline"], minAccuracy: 0.9, maxDrop: nil)),
        .modelPulled(.init(offset: 0, bytes: 100)),
        .modelRolledBack(.init(from: 3, to: 1)),
        .refused(.connection, .init(reason: "handshake timed out", count: 3, peer: "10.0.0.9:5000")),
        .refused(.update, .init(reason: "norm 1e9 is not finite", plan: "ab12", round: 2, bytes: 400)),
        .refused(.renewal, .init(reason: "a party renews only its own identity", count: 1, asked: "hospital-z")),
        .attackFlagged(.init(plan: "ab12", round: 3, kind: "excluded", reason: "left out by multi-krum:1")),
        .attackAlert(.init(plan: "ab12", rounds: [1, 2, 3], alertAfter: 3)),
        .statisticsReleased(.init(datasets: ["d"], noiseMultiplier: 2, features: 4, count: 99.5)),
        .deploymentStarted(.init(deployment: 2, version: 3, stage: "canary", silos: ["a", "b"], maxPSI: 0.25, significance: 0.001, minAccuracy: 0.8,
                                 watch: ["age"], positions: [0])),
        .deploymentStarted(.init(deployment: 3, version: 3, stage: "all", silos: ["a"], maxPSI: 0.1, significance: 0.01, minAccuracy: nil, watch: [], positions: [])),
        .deploymentAnswered(.init(deployment: 2, version: 3, rollback: false, problem: nil, reference: [[1, 2, 3, 4.5]], sigma: 4.4)),
        .deploymentAnswered(.init(deployment: 2, version: 0, rollback: true, problem: "download failed", reference: nil, sigma: nil)),
        .monitorChecked(.init(deployment: 2, version: 3, counts: [9, 8, 7, 1, 2, 3, 4], sigma: 4.4, accuracy: nil, psi: ["age": 0.3], reasons: ["drift"])),
        .monitorChecked(.init(deployment: 2, version: 3, counts: [1], sigma: 4.4, accuracy: 0.9, psi: ["age": 0.3], reasons: [], pValues: ["age": 0.5])),
        .deploymentAlert(.init(deployment: 2, version: 3, reasons: ["drift: age"], back: ["a": 1, "b": 0])),
        .deploymentRolledBack(.init(deployment: 2, version: 3, seconds: 0.42)),
    ]

    @Test("every kind of event reads back as itself from the action and payload it is stored as")
    func roundTrip() throws {
        for event in Self.samples {
            #expect(try AuditEvent(action: event.action, payload: event.payload) == event, "\(event.action): \(event.payload)")
        }
        for kind in AuditEvent.Refusal.Kind.allCases {
            let event = AuditEvent.refused(kind, .init(reason: "r"))
            #expect(try AuditEvent(action: kind.rawValue, payload: event.payload) == event)
        }
    }

    @Test("payloads are canonical JSON under the stored snake_case names, as the chain's hash and older exports expect")
    func storedForm() {
        #expect(AuditEvent.budgetReserved(.init(id: "r1", dataset: "cohort", plan: "ab12", round: 3, event: #"{"k":1}"#)).payload
                == #"{"dataset":"cohort","event":"{\"k\":1}","id":"r1","plan":"ab12","round":3}"#)
        #expect(AuditEvent.planResumed(.init(nextRound: 4, checkpointRound: 3)).payload == #"{"checkpoint_round":3,"next_round":4}"#)
        #expect(AuditEvent.partyRevoked.payload == "{}")
        #expect(AuditEvent.refused(.call, .init(reason: "denied", count: 2, method: "/fedgate.v1.Broker/SubmitPlan")).payload
                == #"{"count":2,"method":"/fedgate.v1.Broker/SubmitPlan","reason":"denied"}"#)
    }

    @Test("records written before typed events (nulls for absent values) read back")
    func olderRecords() throws {
        #expect(try AuditEvent(action: "plan.resume", payload: #"{"checkpoint_round":null,"next_round":1}"#)
                == .planResumed(.init(nextRound: 1, checkpointRound: nil)))
        #expect(try AuditEvent(action: "plan.finished", payload: #"{"reason":null}"#) == .planEnded(.finished, .init(reason: nil)))
        #expect(try AuditEvent(action: "ledger.budget", payload: #"{"dataset":"d","delta":1e-05,"lifetime_cap":null,"per_plan_cap":2,"window_cap":null,"window_days":null}"#)
                == .budgetSet(.init(DatasetBudget(name: "d", delta: 1e-5, perPlanCap: 2))))
    }

    @Test("a known action whose payload lacks a field, holds the wrong type or contradicts the action is refused, naming both")
    func unreadable() {
        let cases: [(action: String, payload: String, names: String)] = [
            ("ledger.reserve", #"{"id":"r","dataset":"d","plan":"p","event":"{}"}"#, "round"),
            ("ledger.reserve", #"{"id":"r","dataset":"d","plan":"p","round":"3","event":"{}"}"#, "round"),
            ("model.gate", #"{"round":1,"passed":"yes","reasons":[],"silos":{},"failures":{}}"#, "passed"),
            ("model.gate", #"{"round":1,"passed":true,"reasons":[],"silos":{"a":{"accuracy":"high"}},"failures":{}}"#, "silos.a.accuracy"),
            ("ledger.commit", #"{"id":"r","state":"released"}"#, "ledger.release"),
            ("ledger.commit", #"{"id":"r","state":"spent"}"#, "state"),
            ("round.committed", "not json", "JSON"),
        ]
        for c in cases {
            #expect {
                _ = try AuditEvent(action: c.action, payload: c.payload)
            } throws: { error in
                let text = "\(error)"
                return text.contains("'\(c.action)'") && text.contains(c.names)
            }
        }
    }

    @Test("an action this build does not know is kept as stored, not refused")
    func unknownAction() throws {
        let event = try AuditEvent(action: "note", payload: #"{"k":1}"#)
        #expect(event == .other(action: "note", payload: #"{"k":1}"#) && event.action == "note" && event.payload == #"{"k":1}"#)
    }

    static func trail(_ events: [(actor: String, subject: String, action: String, payload: String)]) -> AuditTrail {
        var records: [AuditRecord] = []
        for (i, e) in events.enumerated() {
            records.append(AuditRecord.next(after: records.last.map { ($0.seq, $0.hash) }, at: Date(timeIntervalSince1970: Double(1_700_000_000 + i)),
                                            actor: e.actor, action: e.action, subject: e.subject, payload: e.payload))
        }
        return AuditTrail(source: "broker", records: records)
    }

    @Test("the compliance report lists a record it cannot read with its problem, and never shows its fields as zeros")
    func reportNamesUnreadable() {
        let gate = AuditEvent.modelGated(.init(round: 5, passed: true, reasons: [], accuracy: 0.93, fairnessDelta: 0.02,
                                               silos: ["a": .init(accuracy: 0.93, examples: 50, epsilon: 1, epsilonCap: 5, personalisedAccuracy: nil)],
                                               failures: [:], minAccuracy: 0.9, maxDrop: nil))
        let trail = Self.trail([
            ("dana", "ab12", "plan.submit", AuditEvent.planSubmitted(.init(purpose: "research", rounds: 5, strategy: "fedavg")).payload),
            ("broker", "ab12", "model.gate", gate.payload),
            ("broker", "ab12", "model.gate", #"{"round":"five","passed":true,"reasons":[],"silos":{},"failures":{}}"#),
            ("broker", "ab12", "round.committed", AuditEvent.roundAdvanced(.committed, .init(round: 5, survivors: ["a"], checkpointSHA256: "cc")).payload),
        ])
        let report = ComplianceReport([trail], filter: AuditFilter())
        #expect(report.plans.map(\.rounds) == [5] && report.gates.count == 1 && report.gates.first?.accuracy == 0.93)
        #expect(report.gates.first?.silos == ["a": 0.93] && report.gates.first?.personalised == [:])
        #expect(report.rounds.map(\.participants) == [["a"]])
        #expect(report.unreadable == [.init(source: "broker", seq: 3, action: "model.gate", problem: "field 'round' is not Int")])
    }

    @Test("the ledger replay names a ledger record that does not read back")
    func replayNamesUnreadable() {
        let trail = Self.trail([
            ("admin", "cohort", "ledger.budget", AuditEvent.budgetSet(.init(DatasetBudget(name: "cohort", delta: 1e-5, perPlanCap: 2))).payload),
            ("gw", "cohort", "ledger.reserve", #"{"id":"r1","dataset":"cohort","plan":"p","round":"one","event":"{}"}"#),
        ])
        let differences = LedgerReplay.differences(records: trail.records, budgets: [DatasetBudget(name: "cohort", delta: 1e-5, perPlanCap: 2)], entries: [])
        #expect(differences == ["record 2 (ledger.reserve) does not read back: field 'round' is not Int"])
    }
}
