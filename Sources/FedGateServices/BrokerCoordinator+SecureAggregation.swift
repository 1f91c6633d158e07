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

extension BrokerCoordinator {
    struct SecureAbort: Error, CustomStringConvertible { let description: String }

    /// The protocol's parameters for a round: its id (from the plan and round), the participants,
    /// a threshold above half of them, and the encoding and distributed noise every silo applies.
    func secureSetup(_ plan: TrainingPlan, hash: String, number: Int, participants: [String], dimension: Int) throws
        -> (setup: Fedgate_V1_SecAggSetup, configuration: SecureAggregationConfiguration) {
        let digest = Array(SHA256.hash(data: Data("fedgate-secagg-round/\(hash)/\(number)".utf8)))
        let id = digest.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let threshold = max(2, participants.count / 2 + 1)
        let configuration = try SecureAggregationConfiguration(round: id, participants: participants, threshold: threshold, dimension: dimension)
        var setup = Fedgate_V1_SecAggSetup()
        setup.id = id
        setup.participants = participants
        setup.threshold = UInt32(threshold)
        setup.clipNorm = plan.dp.clipNorm
        setup.noiseMultiplier = plan.dp.distributedNoiseMultiplier ?? 1.0
        setup.honestSilos = UInt32(threshold)
        _ = try DistributedNoise(clipNorm: setup.clipNorm, silos: participants.count, honestSilos: threshold, noiseMultiplier: setup.noiseMultiplier)
        return (setup, configuration)
    }

    /// Runs the secure-aggregation exchange of a round whose task was sent: keys, shares, masked
    /// inputs (uploads), unmasking. The mean of the survivors' updates, or why the round cannot go on.
    func secureExchange(_ hash: String, until deadline: ContinuousClock.Instant) async throws -> Result<[Float], SecureAbort> {
        func step(_ name: String, _ body: Data) -> Fedgate_V1_BrokerMessage.OneOf_Kind {
            var s = Fedgate_V1_SecAggStep()
            s.planHash = hash
            s.round = UInt32(active[hash]!.number)
            s.step = name
            s.body = body
            return .secagg(s)
        }
        do {
            // Keys: each silo gets its neighbours' advertisements and every participant's binding.
            await waitForRound(hash, until: deadline)
            try Task.checkCancellation()
            let advertised = try active[hash]!.secagg!.state.closeAdvertising()
            for (silo, advertisements) in advertised.keys {
                send(step("keys", try SecAggJSON.encode(SecAggKeys(advertisements: advertisements, bindings: advertised.bindings))), to: [silo])
            }
            crashPoint("sharing", active[hash]!.number)
            // Shares: relayed to each silo that shared.
            await waitForRound(hash, until: deadline)
            try Task.checkCancellation()
            for relay in try active[hash]!.secagg!.state.closeSharing() {
                send(step("relay", try SecAggJSON.encode(SecAggRelay(shares: relay.shares, sharers: relay.sharers))), to: [relay.silo])
            }
            crashPoint("masking", active[hash]!.number)
            // Masked inputs arrive as uploads; then unmasking by the survivors.
            await waitForRound(hash, until: deadline)
            try Task.checkCancellation()
            var progress = active[hash]!.progress
            guard progress.closeTraining() != nil else {
                active[hash]!.progress = progress
                return .failure(SecureAbort(description: "\(progress.updates.count) masked inputs by the deadline, quorum is \(progress.quorum)"))
            }
            active[hash]!.progress = progress
            let unmasking = try active[hash]!.secagg!.state.closeMasking()
            send(step("unmask", try SecAggJSON.encode(unmasking.request)), to: unmasking.to)
            crashPoint("unmasking", active[hash]!.number)
            await waitForRound(hash, until: deadline)
            try Task.checkCancellation()
            let (setup, sa) = active[hash]!.secagg!
            let (sum, survivors) = try sa.unmask()
            let noise = try DistributedNoise(clipNorm: setup.clipNorm, silos: setup.participants.count,
                                             honestSilos: Int(setup.honestSilos), noiseMultiplier: setup.noiseMultiplier)
            var mean = noise.codec.decode(sum)
            VectorMath.scale(&mean, by: 1 / Float(survivors.count))
            logger.info("masked sum unmasked", metadata: ["plan": "\(hash.prefix(12))", "survivors": "\(survivors)"])
            return .success(mean)
        } catch let error as SecureAggregationError {
            return .failure(SecureAbort(description: "secure aggregation: \(error)"))
        }
    }
}
