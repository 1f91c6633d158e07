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

/// The broker's side of secure aggregation: the round's setup, and the messages of each phase the
/// round's machine closes (keys, relayed shares, the unmasking request), and the unmasked sum decoded.
extension BrokerCoordinator {
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

    /// Sends what a closed phase of the secure exchange produced (each silo its own part), or
    /// decodes the unmasked sum into the survivors' mean; the event for the round's machine.
    func secureStep(_ action: Machine.Action, hash: String, number: Int) throws -> Machine.Event {
        func step(_ name: String, _ body: Data) -> Fedgate_V1_BrokerMessage.OneOf_Kind {
            var s = Fedgate_V1_SecAggStep()
            s.planHash = hash
            s.round = UInt32(number)
            s.step = name
            s.body = body
            return .secagg(s)
        }
        switch action {
        case .sendKeys(let keys, let bindings):
            for (silo, advertisements) in keys {
                send(step("keys", try SecAggJSON.encode(SecAggKeys(advertisements: advertisements, bindings: bindings))), to: [silo])
            }
            crashPoint("sharing", number)
        case .relayShares(let relays):
            for relay in relays {
                send(step("relay", try SecAggJSON.encode(SecAggRelay(shares: relay.shares, sharers: relay.sharers))), to: [relay.silo])
            }
            crashPoint("masking", number)
        case .checkConsistency(let check, let silos):
            for silo in silos {
                // Tests only: a broker that tells silos different survivor lists (the check must catch it).
                let told = settings.tellSurvivors.map { ConsistencyCheck(round: check.round, survivors: $0(silo, check.survivors)) } ?? check
                send(step("consistency", try SecAggJSON.encode(told)), to: [silo])
            }
        case .requestUnmasking(let request, let silos):
            send(step("unmask", try SecAggJSON.encode(request)), to: silos)
            crashPoint("unmasking", number)
        case .decode(let sum, let survivors):
            let setup = active[hash]!.secureSetup!
            let noise = try DistributedNoise(clipNorm: setup.clipNorm, silos: setup.participants.count,
                                             honestSilos: Int(setup.honestSilos), noiseMultiplier: setup.noiseMultiplier)
            var mean = noise.codec.decode(sum)
            VectorMath.scale(&mean, by: 1 / Float(survivors.count))
            active[hash]!.secureMean = mean
            logger.info("masked sum unmasked", metadata: ["plan": "\(hash.prefix(12))", "survivors": "\(survivors)"])
            return .decoded
        default:
            throw Machine.OutOfOrder(event: "secure step \(action)", state: "\(active[hash]!.machine.state)")
        }
        return .sent
    }
}
