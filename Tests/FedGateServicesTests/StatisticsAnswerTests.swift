import FedGateLearning
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
@_spi(Testing) @testable import FedGateServices
import FedGateStore
import Foundation
import SwiftProtobuf
import Testing
@testable import FedGateConsortiumTesting

/// A gateway's answers to the offers of a plan's first round: its statistics release is spent in
/// its ledger before the values leave, sent only when asked, the same when asked again, and never
/// exact; a release the ledger refuses, or one the plan gives no ranges for, is not made.
@Suite("A gateway's statistics release in its answer to an offer")
struct StatisticsAnswerTests {
    typealias Round = Fixtures

    func silo(_ consortium: Consortium, perPlanCap: Double = 5, lifetimeCap: Double = 20) async throws -> (Gateway, PrivacyLedger) {
        let registry = try await consortium.registry("sqlite:broker.sqlite")
        let store = try await consortium.store("hospital-0")
        try await store.save(DatasetBudget(name: "breast-cancer-2024", delta: 1e-5, perPlanCap: perPlanCap, lifetimeCap: lifetimeCap), actor: "admin")
        try await store.addConsent(ConsentRecord(dataset: "breast-cancer-2024", purpose: "research", legalBasis: "consent",
                                                 scope: "all patients", validFrom: Date().addingTimeInterval(-86_400)), actor: "admin")
        let text = Round.policy(silo: "hospital-0")
        let ledger = PrivacyLedger(backend: store)
        let governor = SiloGovernor(policy: try SiloPolicy.parse(text, file: "hospital-0.yaml"), policyText: text, ledger: ledger)
        let settings = Gateway.Settings(credentials: try await consortium.enrolledSilo("hospital-0", in: registry), dataset: "breast-cancer-2024",
                                        train: Round.data, test: Round.data)
        return (Gateway(settings: settings, governor: governor, logger: consortium.logger), ledger)
    }

    func offer(_ yaml: String, round: UInt32, wantsStatistics: Bool) throws -> Fedgate_V1_RoundOffer {
        var offer = Fedgate_V1_RoundOffer()
        offer.planYaml = yaml
        offer.planHash = try TrainingPlan.parse(yaml, file: "plan").contentHash
        offer.round = round
        offer.wantsStatistics = wantsStatistics
        return offer
    }

    @Test("asked for it, the silo commits the release's Gaussian event before answering, sends noisy sums of its clamped, scaled rows, and the same ones when asked again without spending more")
    func releasedOnceAccounted() async throws {
        let consortium = try Consortium()
        let (gateway, ledger) = try await silo(consortium)
        let plan = Round.plan(rounds: 3, quorum: 2)
        let first = await gateway.answer(try offer(plan, round: 1, wantsStatistics: true))
        #expect(first.accepted && first.hasMoments, "\(first.reasons)")
        var entries = try await ledger.backend.entries(dataset: "breast-cancer-2024")
        #expect(entries.filter { $0.round == 0 }.map(\.state) == [.committed], "spent before the answer left: \(entries.map { ($0.round, $0.state) })")
        #expect(entries.first { $0.round == 0 }?.event == .gaussian(noiseMultiplier: Round.statisticsNoise))
        #expect(entries.filter { $0.round == 1 }.map(\.state) == [.reserved])

        // Not exact: every coordinate differs from the sums it noises, by about σ.
        let release = try Round.statistics
        let exact = release.exactSums(Round.data)
        let m = first.moments
        #expect(m.sums.count == 30 && m.squares.count == 30 && m.classes == 2)
        #expect(m.count != exact.count && zip(m.sums, exact.sums).allSatisfy { $0 != $1 } && zip(m.squares, exact.squares).allSatisfy { $0 != $1 })
        let deviations = [m.count - exact.count] + zip(m.sums, exact.sums).map { $0 - $1 } + zip(m.squares, exact.squares).map { $0 - $1 }
        let rms = (deviations.map { $0 * $0 }.reduce(0, +) / Double(deviations.count)).squareRoot()
        #expect(rms > 0.7 * release.sigma && rms < 1.3 * release.sigma, "root mean square deviation \(rms), σ \(release.sigma)")

        // Asked again (the first round aborted, the plan asks in its next round): the same values, nothing more spent.
        let again = await gateway.answer(try offer(plan, round: 2, wantsStatistics: true))
        #expect(again.accepted && again.moments == first.moments)
        // Not asked: nothing sent.
        let later = await gateway.answer(try offer(plan, round: 3, wantsStatistics: false))
        #expect(later.accepted && !later.hasMoments)
        entries = try await ledger.backend.entries(dataset: "breast-cancer-2024")
        #expect(entries.filter { $0.round == 0 }.count == 1 && entries.filter { $0.round > 0 }.count == 3)
    }

    @Test("a release the ledger's cap refuses is not made: the silo refuses the round, releases the round's reservation and sends nothing")
    func refusedByTheCap() async throws {
        let consortium = try Consortium()
        // The ledger's per-plan cap lets the other plan spend much; the policy's (5) still judges this one.
        let (gateway, ledger) = try await silo(consortium, perPlanCap: 100, lifetimeCap: 18.9)
        let plan = Round.plan(rounds: 1, quorum: 2)
        // The plan is admitted while the data set has spent nothing.
        #expect(await gateway.answer(try offer(plan, round: 0, wantsStatistics: false)).accepted)
        // Then another plan spends ε ≈ 18.76 of the lifetime cap of 18.9: the round's DP-SGD still fits
        // (18.79), the statistics release on top does not (19.10).
        let other = try await ledger.reserve(.gaussian(noiseMultiplier: 0.32), dataset: "breast-cancer-2024", plan: "another-plan", round: 1)
        try await ledger.commit(other)
        let reply = await gateway.answer(try offer(plan, round: 1, wantsStatistics: true))
        #expect(!reply.accepted && !reply.hasMoments)
        #expect(reply.reasons.contains { $0.contains("lifetime") && $0.contains("breast-cancer-2024") }, "\(reply.reasons)")
        let entries = try await ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.planHash != "another-plan" }
        #expect(!entries.isEmpty && entries.allSatisfy { $0.state == .released }, "\(entries.map { ($0.round, $0.state) })")
    }

    @Test("a plan that gives no range for one of the silo's columns is refused by the statistics rule, naming the column")
    func unboundedColumnRefused() async throws {
        let consortium = try Consortium()
        let (gateway, ledger) = try await silo(consortium)
        // The bounds without mean_radius's: one column may lack them (a label among the columns), so
        // the broker takes the plan; this silo has mean_radius as a feature.
        let r = Round.ranges[0]
        let plan = Round.plan(rounds: 1, quorum: 2).replacingOccurrences(of: "mean_radius: [\(r.lower), \(r.upper)], ", with: "")
        let parsed = try TrainingPlan.parse(plan, file: "p")
        #expect(plan != Round.plan(rounds: 1, quorum: 2) && parsed.statisticsProblem == nil)
        let reply = await gateway.answer(try offer(plan, round: 1, wantsStatistics: true))
        #expect(!reply.accepted && !reply.hasMoments)
        #expect(reply.reasons.contains { $0.hasPrefix("statistics:") && $0.contains("'mean_radius'") }, "\(reply.reasons)")
        let entries = try await ledger.backend.entries(dataset: "breast-cancer-2024")
        #expect(entries.allSatisfy { $0.state != .committed })
    }
}

@Suite("A plan's statistics release, checked when it is submitted")
struct StatisticsSubmissionTests {
    /// Submits plan text to a broker coordinator on a fresh store: "accepted", or the refusal's text.
    static func submitter() async throws -> @Sendable (String) async -> String {
        let consortium = try Consortium()
        let coordinator = BrokerCoordinator(settings: .init(), store: try await consortium.store("broker"), logger: consortium.logger)
        return { text in
            do {
                _ = try await coordinator.submit(try TrainingPlan.parse(text, file: "plan.yaml"), text: text, by: "dana")
                return "accepted"
            } catch { return "\(error)" }
        }
    }

    @Test("the broker refuses a plan without statistics, one whose feature columns lack ranges, and a schema plan with an unbounded numeric column, each naming the field")
    func refusedAtSubmission() async throws {
        let refusal = try await Self.submitter()
        let plan = Fixtures.plan(rounds: 1, quorum: 1)
        let without = plan.replacingOccurrences(of: Fixtures.statisticsYAML, with: "")
        #expect(without != plan)
        #expect(await refusal(without).hasPrefix("statistics: the plan gives no noise_multiplier"))
        let names = Fixtures.data.featureNames
        let twoUnbounded = zip(names, Fixtures.ranges).prefix(2).reduce(plan) { text, column in
            text.replacingOccurrences(of: "\(column.0): [\(column.1.lower), \(column.1.upper)], ", with: "")
        }
        #expect(await refusal(twoUnbounded).contains("statistics.bounds: give [lower, upper] for each feature column; \(names[0]), \(names[1]) have none"))
        let penguins = try String(contentsOf: Consortium.root.appendingPathComponent("examples/plans/penguins-species.yaml"), encoding: .utf8)
        let unbounded = penguins.replacingOccurrences(of: "bill_depth_mm: { type: numeric, missing: drop, bounds: [10, 25] }",
                                                      with: "bill_depth_mm: { type: numeric, missing: drop }")
        #expect(unbounded != penguins)
        #expect(await refusal(unbounded).hasPrefix("schema.columns.bill_depth_mm.bounds: a numeric column needs bounds"))
        #expect(await refusal(penguins.replacingOccurrences(of: "statistics: { noise_multiplier: 2.0 }", with: "statistics: { noise_multiplier: 2.0, bounds: { sex: [0, 1] } }"))
            .contains("statistics.bounds"), "a schema plan's ranges are its columns' bounds")
    }

    @Test("a regression plan: its target needs bounds and model linear; a classification plan cannot ask for linear or an RMSE gate")
    func regressionPlans() async throws {
        let refusal = try await Self.submitter()
        let mass = try String(contentsOf: Consortium.root.appendingPathComponent("examples/plans/penguins-body-mass.yaml"), encoding: .utf8)
        let plan = try TrainingPlan.parse(mass, file: "penguins-body-mass.yaml")
        #expect(plan.schema?.target == .init(column: "body_mass_g", task: .regression, bounds: .init(lower: 2000, upper: 7000)) && plan.maxRMSE == 450)
        let unbounded = mass.replacingOccurrences(of: "regression: true, bounds: [2000, 7000] }", with: "regression: true }")
        #expect(unbounded != mass)
        #expect(await refusal(unbounded).hasPrefix("schema.target.bounds: a regression target needs bounds"))
        #expect(await refusal(mass.replacingOccurrences(of: "model: linear", with: "model: softmax")).contains("train it with model: linear"))
        let species = try String(contentsOf: Consortium.root.appendingPathComponent("examples/plans/penguins-species.yaml"), encoding: .utf8)
        #expect(await refusal(species.replacingOccurrences(of: "model: softmax", with: "model: linear")).contains("linear predicts a number"))
        #expect(await refusal(species.replacingOccurrences(of: "evaluation: { max_slice_gap: 0.05 }", with: "evaluation: { max_rmse: 10 }"))
            .contains("max_rmse and min_r2 are for a regression target"))
        #expect(await refusal(species.replacingOccurrences(of: "classes: [Adelie, Chinstrap, Gentoo] }", with: "classes: [Adelie, Chinstrap, Gentoo], bounds: [0, 1] }"))
            .contains("schema.target.bounds: is for a regression target"))
        #expect(await refusal(Fixtures.plan(rounds: 1, quorum: 1).replacingOccurrences(of: "model: logistic", with: "model: linear")).contains("needs a numeric target"))
    }
}

@Suite("What leaves a silo during a plan")
struct OutgoingInspectionTests {
    /// Every number in a message's text form (its payload bytes left out: the update is the DP-SGD
    /// output its ledger accounts; and its strings).
    static func numbers(_ message: any SwiftProtobuf.Message) -> [Double] {
        var text = message.textFormatString()
        if var chunk = message as? Fedgate_V1_TransferChunk {
            chunk.data = Data()
            chunk.header.examples = 0  // checked on its own: the released count, rounded
            text = chunk.textFormatString()
        }
        // Strings (hashes, names, versions) are left out: their digits are not figures.
        text = text.replacing(try! Regex(#""(\\.|[^"\\])*""#), with: "\"\"")
        let pattern = try! Regex(#"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"#)
        return text.matches(of: pattern).compactMap { Double(text[$0.range]) }
    }

    @Test("three gateways run a plan: no message any of them writes holds its exact row count, sums or sums of squares; the statistics go once, noisy, after their DP event; updates weigh by the released count; only the named message kinds leave")
    func nothingExactLeaves() async throws {
        try await RecordedPlan.run(seed: 6, plan: Fixtures.plan(rounds: 3, quorum: 3)) { run in
            let (hash, silos, sent, shards) = (run.hash, run.silos, run.sent, run.shards)
            let release = try Fixtures.statistics
            for (i, shard) in shards.enumerated() {
                let messages = sent[i].all
                let scaled = release.exactSums(shard.train)
                let d = shard.train.featureCount
                var raw = [Double](repeating: 0, count: 2 * d)
                for r in 0..<shard.train.count {
                    for j in 0..<d { let x = Double(shard.train.features[r * d + j]); raw[j] += x; raw[d + j] += x * x }
                }
                let exact = [scaled.count] + scaled.sums + scaled.squares + raw
                var kinds: Set<String> = [], releases: [Fedgate_V1_FeatureMoments] = [], weights: [UInt64] = [], metricNames: Set<String> = []
                for message in messages {
                    guard let m = message as? any SwiftProtobuf.Message else { Issue.record("not a protobuf message: \(message)"); continue }
                    if let g = m as? Fedgate_V1_GatewayMessage {
                        switch g.kind {
                        case .hello: kinds.insert("hello")
                        case .heartbeat: kinds.insert("heartbeat")
                        case .offerReply(let r):
                            kinds.insert("offer_reply")
                            if r.hasMoments { releases.append(r.moments) }
                        case .evaluation(let e):
                            kinds.insert("evaluation")
                            #expect(e.examples == UInt64(shard.test.count), "the held-out rows' count, an evaluation released without DP")
                        case .secagg: kinds.insert("secagg")
                        case .auditHead: kinds.insert("audit_head"); continue  // a sequence number and a hash
                        case .deployed, .monitor: kinds.insert("deployment")
                        case nil: kinds.insert("empty")
                        }
                    } else if let chunk = m as? Fedgate_V1_TransferChunk {
                        kinds.insert("update_chunk")
                        if chunk.hasHeader { weights.append(chunk.header.examples); metricNames.formUnion(chunk.header.metrics.keys) }
                    } else if m is Fedgate_V1_ModelRequest {
                        kinds.insert("model_request")
                    } else {
                        kinds.insert("\(type(of: m))")
                    }
                    for x in Self.numbers(m) {
                        #expect(!exact.contains { abs($0 - x) <= 1e-9 * max(1, abs($0)) } || x == 0 || (x == 1 && exact.contains(1)),
                                "hospital-\(i) sent \(x), one of its exact training statistics, in \(m.textFormatString().prefix(300))")
                    }
                }
                #expect(kinds.isSubset(of: ["hello", "heartbeat", "offer_reply", "evaluation", "audit_head", "update_chunk", "model_request"]),
                        "hospital-\(i) sent a kind of message no one has said is DP-accounted or released without DP: \(kinds)")
                // The statistics went once (the first round), noisy in every coordinate.
                let released = try #require(releases.count == 1 ? releases.first : nil, "hospital-\(i) sent \(releases.count) statistics releases")
                #expect(released.count != scaled.count && zip(released.sums, scaled.sums).allSatisfy { $0 != $1 })
                // Each update weighs by the released count, not the exact one.
                #expect(weights.count == 3 && weights.allSatisfy { $0 == UInt64(max(1, released.count.rounded())) }, "\(weights) vs released \(released.count)")
                #expect(metricNames == ["accuracy", "eval_examples"], "\(metricNames)")
                let entries = try await silos[i].ledger.backend.entries(dataset: "breast-cancer-2024")
                #expect(entries.filter { $0.round == 0 }.map(\.state) == [.committed] && entries.filter { $0.round > 0 }.count == 3)
                let recorded = try await silos[i].ledger.backend.auditRecords().filter { $0.action == "statistics.release" && $0.subject == hash }
                #expect(recorded.count == 1 && recorded.first.map { (try? AuditEvent(action: $0.action, payload: $0.payload)) ==
                    .statisticsReleased(.init(datasets: ["breast-cancer-2024"], noiseMultiplier: Fixtures.statisticsNoise, features: d, count: released.count)) } == true)
            }
        }
    }
}

@Suite("What a silo's policy lets leave without DP")
struct PolicyReleaseTests {
    @Test("releases: deny by default; each name listed is one of the releases there are; the evaluation's multiplier is a number in range")
    func parsed() throws {
        let none = try SiloPolicy.parse(Fixtures.policy(silo: "h", releases: ""), file: "h.yaml")
        #expect(none.releasedWithoutDP.isEmpty && none.evaluationNoiseMultiplier == nil && !none.allows(.finalEvaluation))
        let some = try SiloPolicy.parse(Fixtures.policy(silo: "h", releases: "releases: { without_dp: [final_evaluation], evaluation_noise_multiplier: 3 }"), file: "h.yaml")
        #expect(some.releasedWithoutDP == [.finalEvaluation] && some.evaluationNoiseMultiplier == 3)
        #expect { try SiloPolicy.parse(Fixtures.policy(silo: "h", releases: "releases: { without_dp: [row_counts] }"), file: "h.yaml") } throws: {
            "\($0)".contains("releases.without_dp[0]") && "\($0)".contains("'row_counts' is not a release")
        }
        #expect { try SiloPolicy.parse(Fixtures.policy(silo: "h", releases: "releases: { evaluation_noise_multiplier: 0 }"), file: "h.yaml") } throws: {
            "\($0)".contains("releases.evaluation_noise_multiplier")
        }
    }

    @Test("a silo that lists no release sends no round accuracy and no final evaluation; one with evaluation_noise_multiplier sends noisy counts after committing their DP event; the compliance report shows both lists per silo")
    func releasesFollowThePolicy() async throws {
        // hospital-0 releases everything exactly; hospital-1 nothing; hospital-2 its final evaluation with DP.
        let releases = [Fixtures.allReleases, "releases: { without_dp: [label_classes] }",
                        "releases: { without_dp: [label_classes], evaluation_noise_multiplier: 2.0 }"]
        try await RecordedPlan.run(seed: 2, releases: releases, plan: Fixtures.plan(rounds: 2, quorum: 3)) { run in
            let (status, hash, silos, sent, shards) = (run.status, run.hash, run.silos, run.sent, run.shards)

            // Round accuracy: only hospital-0's updates carry it.
            for i in 0..<3 {
                let headers = sent[i].all.compactMap { ($0 as? Fedgate_V1_TransferChunk).flatMap { $0.hasHeader ? $0.header : nil } }
                #expect(headers.count == 2 && headers.allSatisfy { $0.metrics.isEmpty == (i != 0) }, "hospital-\(i): \(headers.map(\.metrics))")
            }
            // The final evaluation: exact from hospital-0, noisy from hospital-2, none from hospital-1.
            let evaluation = try #require(status.evaluation)
            #expect(evaluation.silos.map(\.silo) == ["hospital-0", "hospital-2"], "\(evaluation.silos)")
            let reports = sent.map { $0.all.compactMap { ($0 as? Fedgate_V1_GatewayMessage).flatMap { if case .evaluation(let e)? = $0.kind { e } else { nil } } } }
            #expect(reports[1].count == 1 && reports[1][0].error.contains("releases.without_dp lacks final_evaluation") && reports[1][0].accuracy == 0)
            #expect(reports[0].first?.examples == UInt64(shards[0].test.count))
            let noisy = try #require(reports[2].first)
            #expect(noisy.error.isEmpty && noisy.loss == 0 && (0...1).contains(noisy.accuracy) && !noisy.personalised)
            let entries = try await silos[2].ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.state == .committed }
            #expect(entries.filter { $0.round == 2 && $0.event == .gaussian(noiseMultiplier: 2) }.count == 1, "\(entries.map { ($0.round, $0.event) })")
            #expect(abs(noisy.epsilonSpent - (try LedgerEntry.epsilon(of: entries, delta: 1e-5))) < 1e-9, "the ε it reports includes its evaluation's")

            // The compliance report, from the silos' trails: both lists, per silo.
            var trails: [AuditTrail] = []
            for (i, silo) in silos.enumerated() { trails.append(AuditTrail(source: "hospital-\(i)", records: try await silo.ledger.backend.auditRecords())) }
            let report = ComplianceReport(trails, filter: AuditFilter(plan: hash))
            let bySilo = Dictionary(uniqueKeysWithValues: report.releases.filter { $0.plan == hash }.map { ($0.silo, $0) })
            #expect(bySilo["hospital-0"]?.withoutDP == ["final_evaluation", "label_classes", "round_accuracy"])
            #expect(bySilo["hospital-1"]?.withoutDP == ["label_classes"] && bySilo["hospital-1"]?.evaluationNoiseMultiplier == nil)
            #expect(bySilo["hospital-2"]?.evaluationNoiseMultiplier == 2)
            let withDP = try #require(bySilo["hospital-2"]?.withDP)
            #expect(withDP.map(\.what) == ["statistics release", "DP-SGD updates", "Gaussian releases (program updates, evaluations)"]
                    && withDP.map(\.count) == [1, 2, 1], "\(withDP)")
        }
    }
}

@Suite("Every message a gateway sends during a secure plan, matched to a ledger event or a policy line")
struct ReleaseCensusTests {
    @Test("secure aggregation, DP-SGD and a final evaluation with DP: each silo's statistics, masked updates and evaluation match its ledger's committed events one to one; its protocol messages carry keys and shares; nothing is left over")
    func everyMessageAccounted() async throws {
        let policy = "releases: { without_dp: [], evaluation_noise_multiplier: 2.0 }"
        try await RecordedPlan.run(seed: 5, releases: Array(repeating: policy, count: 3), plan: Fixtures.plan(rounds: 2, quorum: 3, secure: true)) { run in
            let (status, hash, silos, sent) = (run.status, run.hash, run.silos, run.sent)
            #expect(status.evaluation?.silos.count == 3, "every silo released its evaluation with DP")

            for i in 0..<3 {
                // What the ledger says left, by kind: the statistics release, each round's update, the evaluation.
                let committed = try await silos[i].ledger.backend.entries(dataset: "breast-cancer-2024").filter { $0.planHash == hash && $0.state == .committed }
                var ledger = committed.map { entry -> String in
                    if entry.round == 0 { return "statistics" }
                    if case .gaussian = entry.event { return "evaluation" }
                    return "update \(entry.round)"
                }.sorted()
                var census: [String: Int] = [:]
                func account(_ release: String) {
                    if let k = ledger.firstIndex(of: release) { ledger.remove(at: k) } else { Issue.record("hospital-\(i) sent \(release) with no ledger event left for it") }
                }
                for message in sent[i].all {
                    if let g = message as? Fedgate_V1_GatewayMessage {
                        switch g.kind {
                        case .hello, .heartbeat, .auditHead: census["no rows: software, liveness, audit chain", default: 0] += 1
                        case .offerReply(let r):
                            if r.hasMoments { account("statistics") } else { census["no rows: an answer to an offer", default: 0] += 1 }
                        case .secagg(let step):
                            #expect(["advertise", "shares", "signed", "unmasked"].contains(step.step), "\(step.step)")
                            census["no rows: the protocol's keys, encrypted shares, signed survivor list, unmasking", default: 0] += 1
                        case .evaluation(let e):
                            #expect(e.error.isEmpty && e.loss == 0 && !e.personalised)
                            account("evaluation")
                        case .deployed, .monitor: Issue.record("hospital-\(i) sent a deployment message, and nothing was deployed")
                        case nil: Issue.record("hospital-\(i) sent an empty message")
                        }
                    } else if let chunk = message as? Fedgate_V1_TransferChunk {
                        guard chunk.hasHeader else { continue }  // the rest of the same masked update
                        #expect(chunk.header.metrics.isEmpty, "no figures without the policy's round_accuracy")
                        account("update \(chunk.header.round)")
                    } else if message is Fedgate_V1_ModelRequest {
                        census["no rows: a request for the model", default: 0] += 1
                    } else {
                        Issue.record("hospital-\(i) sent a message no line accounts for: \(type(of: message))")
                    }
                }
                #expect(ledger.isEmpty, "hospital-\(i): ledger events with no message: \(ledger)")
                #expect(committed.count == 4 && census.keys.count == 4, "hospital-\(i): \(committed.map { ($0.round, $0.event) }) \(census)")
            }
        }
    }
}

/// Three gateways on the shared data's shards (seed), each recording every message it writes, run
/// one plan to its end; `check` gets what happened. Each silo's policy: the shared one with its
/// `releases` line.
struct RecordedPlan {
    let status: BrokerCoordinator.PlanStatus
    let hash: String
    let silos: [NetworkedRoundTests.Silo]
    let sent: [Recorder<any Sendable>]
    let shards: [(train: Dataset, test: Dataset)]

    static func run(seed: UInt64, releases: [String] = Array(repeating: Fixtures.allReleases, count: 3), plan text: String,
                    _ check: @escaping @Sendable (RecordedPlan) async throws -> Void) async throws {
        let consortium = try Consortium()
        let brokerStore = try await consortium.store("broker")
        let shards = try Fixtures.simulation(seed: seed).shards()
        let sent = (0..<3).map { _ in Recorder<any Sendable>() }
        try await BrokerHost.serve(port: 0, credentials: try consortium.credentials("broker", .broker), store: brokerStore, logger: consortium.logger) { broker in
            var silos: [NetworkedRoundTests.Silo] = []
            for (i, shard) in shards.enumerated() {
                let record = sent[i]
                silos.append(try await NetworkedRoundTests().makeSilo(consortium, "hospital-\(i)", train: shard.train, test: shard.test,
                                                                      policy: Fixtures.policy(silo: "hospital-\(i)", releases: releases[i]),
                                                                      broker: brokerStore, port: broker.port) { $0.outgoing = { record.add($0) } })
            }
            let running = silos.map { silo in Task { await silo.gateway.run() } }
            defer { running.forEach { $0.cancel() } }
            try await NetworkedRoundTests().waitForGateways(broker, 3)
            let hash = try await broker.coordinator.submit(try TrainingPlan.parse(text, file: "plan.yaml"), text: text, by: "dana")
            let status = try #require(await broker.coordinator.finished(hash))
            #expect(status.state == .finished && status.rounds.allSatisfy { $0.state == "committed" }, "\(status.reason ?? "")")
            try await check(RecordedPlan(status: status, hash: hash, silos: silos, sent: sent, shards: shards))
        }
    }
}
