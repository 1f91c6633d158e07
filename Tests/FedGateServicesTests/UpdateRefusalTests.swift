import FedGateAggregation
import FedGateLearning
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateServices
import FedGateStore
import FedGateTensors
import FedGateTransport
import Foundation
import Logging
import Testing
@testable import FedGateConsortiumTesting

/// The broker's message handlers fed what a faulty or hostile silo might send, in-process (the
/// coordinator behind the RPC layer, with its real store): every bad update is refused with a
/// reason and audited, and random messages never crash it or break its audit chain.
@Suite("The broker's handlers refuse bad updates and survive random messages")
struct UpdateRefusalTests {
    /// A coordinator with three silos whose streams answer every offer with acceptance, and the
    /// plan in its training phase once the task has reached them.
    struct Harness {
        let coordinator: BrokerCoordinator
        let store: SQLiteLedger
        let hash: String
        let dimension: Int
        let silos = ["hospital-0", "hospital-1", "hospital-2"]
        let tokens: [String: UInt64]
        let listeners: [Task<Void, Never>]
    }

    /// `deadline`: the round's, in seconds (long where the test must still be in the round on a loaded machine).
    func start(_ consortium: Consortium, deadline: Int = 10) async throws -> Harness {
        let store = try await consortium.store("broker")
        var settings = BrokerCoordinator.Settings()
        settings.connectWait = .seconds(5)
        // These stand-in silos send no heartbeats: the broker must not close them as silent while a
        // loaded machine runs the test slowly.
        settings.silentAfter = .seconds(3600)
        let coordinator = BrokerCoordinator(settings: settings, store: store, logger: consortium.logger)
        let silos = ["hospital-0", "hospital-1", "hospital-2"]
        var noise = GaussianNoiseGenerator()
        let moments = try Fixtures.statistics.release(Fixtures.data, noise: &noise)
        var tokens: [String: UInt64] = [:]
        var listeners: [Task<Void, Never>] = []
        let tasked = Recorder<String>()
        for silo in silos {
            let (stream, outbox) = AsyncStream.makeStream(of: Fedgate_V1_BrokerMessage.self)
            let token = await coordinator.open(silo: silo, datasets: ["breast-cancer-2024"], outbox: outbox)
            tokens[silo] = token
            listeners.append(Task {
                for await message in stream {
                    switch message.kind {
                    case .offer(let offer):
                        var reply = Fedgate_V1_OfferReply()
                        reply.planHash = offer.planHash
                        reply.round = offer.round
                        reply.accepted = true
                        reply.moments.count = moments.count
                        reply.moments.sums = moments.sums
                        reply.moments.squares = moments.squares
                        reply.moments.classes = UInt32(moments.classes)
                        await coordinator.reply(reply, from: silo, token: token)
                    case .task: tasked.add(silo)
                    case .evaluate(let task):
                        var report = Fedgate_V1_EvaluationReport()
                        report.planHash = task.planHash
                        report.round = task.round
                        report.error = "this test silo has no held-out rows"
                        await coordinator.evaluation(report, from: silo, token: token)
                    default: continue
                    }
                }
            })
        }
        let text = Fixtures.plan(rounds: 1, quorum: 2, deadline: deadline)
        let hash = try await coordinator.submit(try TrainingPlan.parse(text, file: "plan.yaml"), text: text, by: "dana")
        #expect(await eventually { tasked.all.count == 3 })
        return Harness(coordinator: coordinator, store: store, hash: hash, dimension: Fixtures.data.featureCount + 1,
                       tokens: tokens, listeners: listeners)
    }

    func upload(_ h: Harness, from silo: String, _ delta: [Float], round: Int = 1) async -> String? {
        do {
            let payload = try ModelPayload.update(delta)
            try await h.coordinator.upload(from: silo, header: TransferHeader(planHash: h.hash, round: round, totalBytes: payload.count, examples: 100),
                                           payload: payload)
            return nil
        } catch { return "\(error)" }
    }

    @Test("NaN, infinity, a huge norm, a wrong shape, a second upload and a silo not in the round: each refused with its reason in the answer, audited and counted; refused updates do not count, and the round commits on the valid ones with its model unchanged")
    func badUpdatesRefusedAndAudited() async throws {
        let consortium = try Consortium()
        let h = try await start(consortium, deadline: 300)
        defer { h.listeners.forEach { $0.cancel() } }
        let d = h.dimension
        let initial = try Network(kind: .logistic, inputs: d - 1, classes: 2, seed: 0).parameters

        // Refused at once, with the reason in the answer.
        let shape = await upload(h, from: "hospital-1", [Float](repeating: 0.1, count: d + 3))
        #expect(shape?.contains("expected F32 [\(d)]") == true, "\(shape ?? "accepted")")
        let intruder = await upload(h, from: "mallory", [Float](repeating: 0.1, count: d))
        #expect(intruder?.contains("not a participant") == true, "\(intruder ?? "accepted")")
        let lateRound = await upload(h, from: "hospital-2", [Float](repeating: 0.1, count: d), round: 7)
        #expect(lateRound?.contains("not taking updates") == true, "\(lateRound ?? "accepted")")
        // Taken off the wire, then refused by validation before they touch the model: the silo is
        // told why, and the refused update does not make it a contributor.
        var nan = [Float](repeating: 0.1, count: d); nan[3] = .nan
        var inf = [Float](repeating: 0.1, count: d); inf[0] = -.infinity
        let notANumber = await upload(h, from: "hospital-0", nan)
        #expect(notANumber?.contains("non_finite") == true, "\(notANumber ?? "accepted")")
        let infinite = await upload(h, from: "hospital-1", inf)
        #expect(infinite?.contains("non_finite") == true, "\(infinite ?? "accepted")")
        let huge = await upload(h, from: "hospital-2", [Float](repeating: 1e6, count: d))
        #expect(huge?.contains("norm check") == true, "\(huge ?? "accepted")")
        // The same silos' valid updates (zero: the model must not move) are then taken, once each.
        let zero = [Float](repeating: 0, count: d)
        #expect(await upload(h, from: "hospital-0", zero) == nil)
        let twice = await upload(h, from: "hospital-0", zero)
        #expect(twice?.contains("already uploaded") == true, "\(twice ?? "accepted")")
        #expect(await upload(h, from: "hospital-1", zero) == nil)
        #expect(await upload(h, from: "hospital-2", zero) == nil)

        let status = await h.coordinator.finished(h.hash)
        #expect(status?.rounds.map(\.state) == ["committed"], "\(String(describing: status?.rounds))")
        #expect(status?.rounds.first?.participants == h.silos, "only silos whose update was taken are participants")
        #expect(status?.parameters == initial, "no refused update moved the model")

        let records = try await h.store.auditRecords().filter { $0.action == "update.reject" }
        let text = records.map { "\($0.subject) \($0.payload)" }
        for (silo, words) in [("hospital-1", "expected F32"), ("mallory", "not a participant"), ("hospital-2", "not taking updates"),
                              ("hospital-0", "already uploaded"), ("hospital-0", "non_finite"), ("hospital-1", "non_finite"),
                              ("hospital-2", "norm check")] {
            #expect(records.contains { $0.subject == silo && $0.payload.contains(words) }, "\(silo): \(words) not audited in \(text)")
        }
        #expect(records.count == 7, "\(text)")
        let metrics = try MetricsTests.parse(h.coordinator.metrics.text)
        func rejected(_ reason: String) -> Double? {
            metrics.first { $0.name == "fedgate_updates_rejected_total" && $0.labels == ["reason": reason] }?.value
        }
        #expect(rejected("shape") == 1 && rejected("not_participant") == 1 && rejected("round_closed") == 1 && rejected("duplicate") == 1)
        #expect(rejected("non_finite") == 2 && rejected("norm") == 1)
        // The refusals of an update's content are poisoning flags too (the protocol's are not): in
        // the round's status, the audit and the metrics.
        let flagged = status?.rounds.first?.flagged ?? []
        #expect(flagged.map(\.silo).sorted() == ["hospital-0", "hospital-1", "hospital-1", "hospital-2"] && flagged.allSatisfy { $0.kind == .refused },
                "\(flagged)")
        #expect(flagged.contains { $0.silo == "hospital-2" && $0.reason.hasPrefix("norm check") })
        #expect(flagged.contains { $0.silo == "hospital-1" && $0.reason.hasPrefix("shape check") })
        let flags = try await h.store.auditRecords().filter { $0.action == "attack.flag" }
        #expect(flags.map(\.subject).sorted() == ["hospital-0", "hospital-1", "hospital-1", "hospital-2"], "\(flags.map(\.payload))")
        #expect(metrics.first { $0.name == "fedgate_attack_flags_total" && $0.labels == ["kind": "refused"] }?.value == 4)
        let chain = try await h.store.auditRecords()
        #expect(AuditVerification.verify(chain) == .intact(records: chain.count))
    }

    @Test("8 000 random messages to the broker's handlers (uploads of random bytes and headers, offer answers, secure-aggregation steps, evaluation reports, from silos in and out of the round): no crash, every refused upload answered with a reason and audited, the chain intact")
    func randomMessages() async throws {
        let consortium = try Consortium()
        let h = try await start(consortium)
        defer { h.listeners.forEach { $0.cancel() } }
        var random = SimulationRandom(seed: 0xF022)
        let senders = h.silos + ["mallory"]
        let steps = ["advertise", "shares", "unmasked", "keys", "", "relay", "🙂"]
        var refusedUploads = 0, tried = 0
        func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &random) } }
        for i in 0..<8_000 {
            let silo = senders[Int.random(in: 0..<senders.count, using: &random)]
            let token = h.tokens[silo] ?? 999
            let round = [1, 1, 1, 0, 2, Int.random(in: -5...1_000_000, using: &random)][Int.random(in: 0..<6, using: &random)]
            let plan = Bool.random(using: &random) ? h.hash : String(decoding: bytes(8), as: UTF8.self)
            tried += 1
            switch i % 4 {
            case 0:
                // Mostly safetensors-looking payloads with damage, some pure noise.
                var payload = (try? ModelPayload.update([Float](repeating: 0.01, count: Int.random(in: 0...(2 * h.dimension), using: &random)))) ?? []
                if payload.isEmpty || Bool.random(using: &random) { payload = bytes(Int.random(in: 0...300, using: &random)) }
                for _ in 0..<Int.random(in: 0...4, using: &random) where !payload.isEmpty {
                    payload[Int.random(in: 0..<payload.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
                let header = TransferHeader(planHash: plan, round: round, totalBytes: payload.count, examples: Int.random(in: -3...1 << 20, using: &random))
                do { try await h.coordinator.upload(from: silo, header: header, payload: payload) } catch {
                    refusedUploads += 1
                    #expect(!"\(error)".isEmpty)
                }
            case 1:
                var reply = Fedgate_V1_OfferReply()
                reply.planHash = plan
                reply.round = UInt32(truncatingIfNeeded: round)
                reply.accepted = Bool.random(using: &random)
                reply.reasons = [String(decoding: bytes(6), as: UTF8.self)]
                reply.moments.sums = (0..<Int.random(in: 0...40, using: &random)).map { _ in Double.random(in: -1e300...1e300, using: &random) }
                await h.coordinator.reply(reply, from: silo, token: token)
            case 2:
                var step = Fedgate_V1_SecAggStep()
                step.planHash = plan
                step.round = UInt32(truncatingIfNeeded: round)
                step.step = steps[Int.random(in: 0..<steps.count, using: &random)]
                step.body = Data(bytes(Int.random(in: 0...200, using: &random)))
                await h.coordinator.secagg(step, from: silo, token: token)
            default:
                var report = Fedgate_V1_EvaluationReport()
                report.planHash = plan
                report.round = UInt32(truncatingIfNeeded: round)
                report.accuracy = Double.random(in: -10...10, using: &random)
                await h.coordinator.evaluation(report, from: silo, token: token)
            }
        }
        _ = await h.coordinator.finished(h.hash)
        let chain = try await h.store.auditRecords()
        #expect(AuditVerification.verify(chain) == .intact(records: chain.count))
        let audited = chain.filter { $0.action == "update.reject" }.count
        // Uploads refused at once are audited one by one; those refused at validation (after being
        // taken) are audited when the round aggregates: at least as many records as refusals.
        #expect(audited >= refusedUploads && refusedUploads > 1_500, "\(audited) records for \(refusedUploads) refusals of \(tried) messages")
    }
}
