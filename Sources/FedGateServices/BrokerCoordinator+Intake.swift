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

/// What gateways send during a round: offer answers, evaluation reports, secure-aggregation steps,
/// downloads and updates. Each is checked against the round it names before it counts.
extension BrokerCoordinator {
    /// A gateway's answer to an offer. Its feature moments are checked against the plan before
    /// anything is sized from them: an answer with impossible moments counts as that silo's
    /// refusal (audited as `reply.reject`), never as an acceptance.
    public func reply(_ reply: Fedgate_V1_OfferReply, from silo: String, token: UInt64) async {
        heartbeat(silo: silo, token: token)
        if reply.round == 0 {
            admitted(reply, from: silo)
            return
        }
        guard let round = active[reply.planHash], round.number == Int(reply.round) else {
            logger.warning("answer to an offer that is not open", metadata: ["silo": "\(silo)", "plan": "\(PeerText.bounded(reply.planHash.prefix(12)))",
                                                                           "round": "\(reply.round)"])
            return
        }
        var accepted = reply.accepted
        var reasons = PeerText.bounded(reply.reasons)
        var moments: ReleasedStatistics?
        if accepted && reply.hasMoments {
            let m = ReleasedStatistics(count: reply.moments.count, sums: reply.moments.sums,
                                       squares: reply.moments.squares, classes: Int(reply.moments.classes))
            if let problem = m.problem(features: round.momentsShape.features, classes: round.momentsShape.classes) {
                accepted = false
                reasons = ["broker: the silo's feature moments were refused: \(problem)"]
                metrics.count("fedgate_replies_rejected_total")
                logger.warning("offer answer rejected", metadata: ["silo": "\(silo)", "round": "\(reply.round)", "reason": "\(problem)"])
                try? await runStore.audit(.refused(.reply, .init(reason: problem, plan: reply.planHash, round: Int(reply.round))),
                                          actor: settings.brokerID, subject: silo, at: now())
                // The round may have moved on while the record was written.
                guard active[reply.planHash]?.number == Int(reply.round) else { return }
            } else {
                moments = m
            }
        }
        do {
            try active[reply.planHash]!.machine.reply(from: silo, accepted: accepted, reasons: reasons, moments: moments)
            metrics.count("fedgate_offer_answers_total", [("answer", accepted ? "accepted" : "refused")])
            for reason in reasons where !accepted {
                metrics.count("fedgate_offer_refusals_total", [("rule", FedGateMetrics.rule(of: reason))])
            }
            logger.info(accepted ? "offer accepted" : "offer refused", metadata: ["silo": "\(silo)", "round": "\(reply.round)", "reasons": "\(reasons)"])
            wakeIfDone(reply.planHash)
        } catch {
            logger.warning("answer refused", metadata: ["silo": "\(silo)", "reason": "\(error)"])
        }
    }

    /// A silo's evaluation of a plan's final model. An impossible figure counts as that silo's
    /// failure to evaluate, never as a figure.
    public func evaluation(_ report: Fedgate_V1_EvaluationReport, from silo: String, token: UInt64) {
        heartbeat(silo: silo, token: token)
        var report = report
        report.error = PeerText.bounded(report.error)
        let problem = report.error.isEmpty ? Self.figures(of: report).problem : nil
        if let problem { report.error = "broker: the report was refused: \(problem)" }
        guard evaluations[report.planHash]?.state.receive(report, from: silo, round: Int(report.round)) == true else {
            logger.warning("evaluation report not asked for", metadata: ["silo": "\(silo)", "plan": "\(PeerText.bounded(report.planHash.prefix(12)))"])
            return
        }
        if let problem { logger.warning("evaluation report refused", metadata: ["silo": "\(silo)", "reason": "\(problem)"]) }
        wakeIfDone(report.planHash)
    }

    /// A report's figures, to be checked before they count.
    static func figures(of r: Fedgate_V1_EvaluationReport) -> EvaluationFigures {
        EvaluationFigures(accuracy: r.accuracy, examples: Int(clamping: r.examples), epsilonSpent: r.epsilonSpent, epsilonCap: r.epsilonCap,
                          personalisedAccuracy: r.personalised ? r.personalisedAccuracy : nil,
                          regression: r.rmse != 0 || r.mae != 0 || r.r2 != 0 ? RegressionFigures(rmse: r.rmse, mae: r.mae, r2: r.r2) : nil,
                          slices: r.slices.map(SliceFigure.init))
    }

    /// A silo's step of a secure-aggregation round (what it says it is must match who sent it).
    public func secagg(_ step: Fedgate_V1_SecAggStep, from silo: String, token: UInt64) {
        heartbeat(silo: silo, token: token)
        let hash = step.planHash
        guard active[hash]?.number == Int(step.round), active[hash]?.machine.secure?.alive.contains(silo) == true else {
            logger.warning("secure-aggregation step not expected", metadata: ["silo": "\(silo)", "step": "\(PeerText.bounded(step.step, limit: 32))"])
            return
        }
        do {
            switch step.step {
            case "advertise":
                let body = try SecAggJSON.decode(SecAggAdvertise.self, step.body, step: step.step)
                try active[hash]!.machine.secureStep { try $0.advertise(body.advertisement, binding: body.binding, bindingSilo: body.binding.silo, from: silo) }
            case "shares":
                let shares = try SecAggJSON.decode([EncryptedShare].self, step.body, step: step.step)
                try active[hash]!.machine.secureStep { try $0.share(shares, from: silo) }
            case "signed":
                let signature = try SecAggJSON.decode(ConsistencySignature.self, step.body, step: step.step)
                try active[hash]!.machine.secureStep { try $0.sign(signature, from: silo) }
            case "unmasked":
                let response = try SecAggJSON.decode(UnmaskingResponse.self, step.body, step: step.step)
                try active[hash]!.machine.secureStep { try $0.answer(response, from: silo) }
            default:
                throw SecureAggregationError.malformed("a '\(PeerText.bounded(step.step, limit: 32))' step, which is not a step of the protocol")
            }
            wakeIfDone(hash)
        } catch {
            logger.warning("secure-aggregation step refused", metadata: ["silo": "\(silo)", "step": "\(PeerText.bounded(step.step, limit: 32))", "reason": "\(error)"])
        }
    }

    /// The model a participant downloads, with its checksum.
    public func model(for silo: String, plan: String, round: Int) throws -> ModelFile {
        heardFrom(silo)
        if let e = evaluations[plan], e.state.round == round {
            guard e.state.expected.contains(silo) else { throw BrokerError.notAskedToEvaluate(silo: silo, plan: plan) }
            plans[plan]?.bytesOut += e.model.bytes
            metrics.count("fedgate_bytes_total", [("direction", "out")], by: e.model.bytes)
            return e.model
        }
        guard let r = active[plan], r.number == round, let model = r.model else {
            throw BrokerError.roundNotTraining(plan: plan, round: round)
        }
        guard r.machine.isParticipant(silo) else { throw RoundRefusal.notParticipant(silo, round: round) }
        plans[plan]?.bytesOut += model.bytes
        metrics.count("fedgate_bytes_total", [("direction", "out")], by: model.bytes)
        return model
    }

    /// A participant's update, already reassembled and checksummed by the transport. One that is
    /// refused (not a participant of a round taking updates, wrong shape, not float32, unreadable)
    /// is audited as `update.reject` with the reason, and the reason goes back to the silo.
    public func upload(from silo: String, header: TransferHeader, payload: [UInt8]) async throws {
        heardFrom(silo)
        do {
            try accept(from: silo, header: header, payload: payload)
            metrics.count("fedgate_bytes_total", [("direction", "in")], by: payload.count)
        } catch {
            let reason = (error as? UpdateRefused)?.reason ?? .unreadable
            metrics.count("fedgate_updates_rejected_total", [("reason", reason.rawValue)])
            logger.warning("update refused", metadata: ["silo": "\(silo)", "round": "\(header.round)", "reason": "\(error)"])
            try await store.audit(.refused(.update, .init(reason: "\(error)", plan: header.planHash, round: header.round, bytes: payload.count)),
                                  actor: settings.brokerID, subject: silo, at: now())
            if let flag = (error as? UpdateRefused)?.flag { try await self.flag(header.planHash, round: header.round, [flag]) }
            throw error
        }
    }

    func accept(from silo: String, header: TransferHeader, payload: [UInt8]) throws {
        let hash = header.planHash
        // Read what is needed without holding a copy of the round: a copy alive while the
        // accumulator is folded in place below would make that fold copy a model-sized array.
        guard active[hash]?.number == header.round else {
            throw UpdateRefused(.roundClosed, "round \(header.round) of plan \(hash.prefix(12))… is not taking updates")
        }
        guard active[hash]!.machine.isParticipant(silo) else {
            throw UpdateRefused(.notParticipant, "\(silo) is not a participant of round \(header.round)")
        }
        guard !active[hash]!.machine.hasUploaded(silo) else {
            throw UpdateRefused(.duplicate, "\(silo) already uploaded its update for round \(header.round)")
        }
        let dimension = active[hash]!.dimension
        if active[hash]!.machine.secure != nil {
            // A masked input: `dimension` little-endian uint32 values, folded into the masked sum.
            guard payload.count == 4 * dimension else {
                throw UpdateRefused(.shape, "a masked input of \(payload.count) bytes; this round's is \(4 * dimension)")
            }
            guard (1...(1 << 40)).contains(header.examples) else {
                throw UpdateRefused(.examples, "\(header.examples) examples (allowed 1…\(1 << 40))")
            }
            let values = payload.withUnsafeBytes { raw in (0..<dimension).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) } }
            do { try active[hash]!.machine.secureStep { try $0.receiveMasked(values, from: silo) } } catch let error as SecureAggregationError {
                if case .replay = error { throw UpdateRefused(.duplicate, "\(error)") }
                throw UpdateRefused(.unreadable, "\(error)")
            }
            try active[hash]!.machine.upload(ClientUpdate(silo: silo, delta: [], examples: header.examples), metrics: UploadMetrics.checked(header.metrics))
            plans[hash]?.bytesIn += payload.count
            logger.info("masked input received", metadata: ["silo": "\(silo)", "round": "\(header.round)", "bytes": "\(payload.count)"])
            wakeIfDone(hash)
            return
        }
        if let codec = active[hash]!.codec {
            try acceptEncoded(from: silo, header: header, payload: payload, codec: codec)
            return
        }
        let entry: SafeTensors.Entry
        do { entry = try ModelPayload.entry(payload, tensor: "delta", dimension: dimension) } catch let error as ModelPayload.WrongShape {
            throw UpdateRefused(.shape, "\(error)", flag: AttackFlag(silo: silo, kind: .refused, reason: "shape check: \(error)"))
        } catch {
            throw UpdateRefused(.unreadable, "\(error)")
        }
        // The values straight from the payload's bytes when they are aligned, else from a copy.
        if try entry.withFloat32Buffer({ try take(from: silo, header, bytes: payload.count, $0) }) == nil {
            try entry.floats.withUnsafeBufferPointer { try take(from: silo, header, bytes: payload.count, $0) }
        }
    }

    /// An update in the plan's codec: decoded (a payload that does not decode is refused, and flagged
    /// as a shape refusal), then taken like a float32 one.
    private func acceptEncoded(from silo: String, header: TransferHeader, payload: [UInt8], codec name: String) throws {
        let delta: [Float]
        do { delta = try makeCodec(name).decode(payload, dimension: active[header.planHash]!.dimension) } catch {
            throw UpdateRefused(.shape, "a \(name) update that does not decode: \(error)",
                                flag: AttackFlag(silo: silo, kind: .refused, reason: "shape check: a \(name) update that does not decode"))
        }
        try delta.withUnsafeBufferPointer { try take(from: silo, header, bytes: payload.count, $0) }
    }

    /// An update's values, checked before they count (a refused one is answered with its reason, is
    /// not a participant's contribution and does not count towards the quorum), then folded into
    /// FedAvg's mean or kept for the plan's strategy, and its bytes counted.
    private func take(from silo: String, _ header: TransferHeader, bytes: Int, _ values: UnsafeBufferPointer<Float>) throws {
        let hash = header.planHash
        let validator = UpdateValidator(dimension: active[hash]!.dimension, maximumNorm: settings.maximumUpdateNorm)
        if let rejection = validator.check(silo: silo, examples: header.examples, delta: values) { throw UpdateRefused(rejection) }
        let metrics = UploadMetrics.checked(header.metrics)
        let scaffold = active[hash]!.scaffoldSum != nil
        if scaffold, !(header.scaffoldScale.isFinite && (1e-9...1e9).contains(header.scaffoldScale)) {
            throw UpdateRefused(.unreadable, "a SCAFFOLD update needs the silo's local steps × learning rate (scaffold_scale), got \(header.scaffoldScale)")
        }
        if active[hash]!.folded != nil {
            try active[hash]!.machine.upload(ClientUpdate(silo: silo, delta: [], examples: header.examples), metrics: metrics)
            active[hash]!.folded!.fold(values, weight: Double(header.examples))
        } else {
            try active[hash]!.machine.upload(ClientUpdate(silo: silo, delta: Array(values), examples: header.examples), metrics: metrics)
        }
        if scaffold {
            // Its control variate's change is −c − Δy/(K·η): the broker keeps Σ Δy/(K·η) and the count.
            let scale = Float(1 / header.scaffoldScale)
            for j in 0..<values.count { active[hash]!.scaffoldSum![j] += scale * values[j] }
            active[hash]!.scaffoldCount += 1
        }
        received(from: silo, header, bytes: bytes)
    }

    /// A taken update's bytes, counted for the plan and the round (and what float32 would have taken).
    private func received(from silo: String, _ header: TransferHeader, bytes: Int) {
        let hash = header.planHash
        plans[hash]?.bytesIn += bytes
        active[hash]!.bytesIn += bytes
        active[hash]!.rawBytes += 4 * active[hash]!.dimension
        logger.info("update received", metadata: ["silo": "\(silo)", "round": "\(header.round)", "bytes": "\(bytes)"])
        wakeIfDone(hash)
    }
}
