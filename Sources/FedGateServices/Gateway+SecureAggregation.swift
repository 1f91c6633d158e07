import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateProto
import FedGateSecureAggregation
import X509
import Crypto
import FedGateStore
import FedGateTransport
import FedGateRounds
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging

/// This silo's side of a secure-aggregation round: keys bound to its certificate, shares, the
/// masked update, the unmasking.
extension Gateway {
    /// Fresh keys for the round, advertised with this silo's certificate binding its identity key.
    func advertise(_ task: Fedgate_V1_RoundTask, reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) throws {
        let setup = task.secagg
        let configuration = try SecureAggregationConfiguration(round: setup.id, participants: setup.participants, threshold: Int(setup.threshold),
                                                               dimension: try dimension(of: task))
        let identityKey = Curve25519.Signing.PrivateKey()
        var client = try SecureAggregationClient(configuration: configuration, silo: siloID, identityKey: identityKey,
                                                 directory: [siloID: identityKey.publicKey])
        let advertisement = try client.advertiseKeys()
        let binding = try SecAggBinding(id: setup.id, identityKey: identityKey, credentials: credentials)
        secure[RoundKey(task.planHash, task.round)] = SecureSession(client: client, setup: setup)
        reply.yield(secureMessage(task.planHash, task.round, "advertise", try SecAggJSON.encode(SecAggAdvertise(advertisement: advertisement, binding: binding))))
    }

    func dimension(of task: Fedgate_V1_RoundTask) throws -> Int {
        guard let accepted = judge.accepted(task.planHash) else { throw GatewayError.unacceptedPlan(plan: task.planHash, asked: "a secure-aggregation task") }
        return try Network.parameterCount(kind: try ModelKind(parsing: accepted.plan.model), inputs: accepted.train.featureCount, classes: Int(task.classes))
    }

    func secureMessage(_ plan: String, _ round: UInt32, _ step: String, _ body: Data) -> Fedgate_V1_GatewayMessage {
        var message = Fedgate_V1_GatewayMessage()
        message.secagg.planHash = plan
        message.secagg.round = round
        message.secagg.step = step
        message.secagg.body = body
        return message
    }

    /// The broker's relays: every peer's keys (each binding checked against the CA), the shares
    /// held for this silo, and the unmasking request.
    func secureStep(_ step: Fedgate_V1_SecAggStep, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>,
                            reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) async {
        let key = RoundKey(step.planHash, step.round)
        guard let setup = secure[key]?.setup else {
            logger.warning("secure-aggregation step for a round not in progress", metadata: ["silo": "\(siloID)", "step": "\(step.step)"])
            return
        }
        // The session is changed in place, never through a copy held across an await: training
        // sets the update concurrently (actor reentrancy), and a stale copy written back would lose it.
        do {
            switch step.step {
            case "keys":
                let keys = try SecAggJSON.decode(SecAggKeys.self, step.body, step: step.step)
                let ca = try Certificate(pemEncoded: credentials.caPEM)
                var directory: [SiloID: Curve25519.Signing.PublicKey] = [:]
                for binding in keys.bindings where setup.participants.contains(binding.silo) {
                    directory[binding.silo] = try await binding.verified(id: setup.id, ca: ca)
                }
                for silo in setup.participants where directory[silo] == nil {
                    // A participant that did not advertise: the protocol treats it as dropped; it has no key to check.
                    directory[silo] = Curve25519.Signing.PrivateKey().publicKey
                }
                guard secure[key] != nil else { return }
                try secure[key]!.client.learnIdentities(directory)
                let shares = try secure[key]!.client.shareKeys(keys.advertisements)
                reply.yield(secureMessage(step.planHash, step.round, "shares", try SecAggJSON.encode(shares)))
                await crashPoint("shared", after: .milliseconds(300))
            case "relay":
                if settings.dropOutBeforeMasking {
                    secure.removeValue(forKey: key)
                    reply.finish()
                    return
                }
                secure[key]!.relay = try SecAggJSON.decode(SecAggRelay.self, step.body, step: step.step)
                // Not on the task stream's loop: the upload may be long and the stream must keep flowing.
                Task {
                    do { try await self.maskAndUploadIfReady(key, broker: broker) } catch { self.maskingFailed(key, error) }
                }
            case "unmask":
                let request = try SecAggJSON.decode(UnmaskingRequest.self, step.body, step: step.step)
                await crashPoint("unmasking")
                let response = try secure[key]!.client.unmask(request)
                reply.yield(secureMessage(step.planHash, step.round, "unmasked", try SecAggJSON.encode(response)))
            default:
                throw SecureAggregationError.malformed("unknown step '\(step.step)'")
            }
        } catch {
            logger.error("secure aggregation step refused; this silo leaves the round", metadata: [
                "silo": "\(siloID)", "step": "\(step.step)", "reason": "\(error)"])
            secure.removeValue(forKey: key)
        }
    }

    /// Once both the local update and the broker's relay are here: clip and encode the update, add
    /// this silo's share of the distributed noise, mask it, commit the privacy spent, upload it.
    func maskAndUploadIfReady(_ key: RoundKey, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws {
        guard let session = secure[key], let (delta, header) = session.update, let relay = session.relay, !session.masked else { return }
        secure[key]!.masked = true
        let setup = session.setup
        let noise = try DistributedNoise(clipNorm: setup.clipNorm, silos: setup.participants.count, honestSilos: Int(setup.honestSilos),
                                         noiseMultiplier: setup.noiseMultiplier)
        var rng = ChaCha20Random()
        var encoded = try noise.codec.encode(delta, using: &rng)
        noise.addNoise(to: &encoded, using: &rng)
        let input = try secure[key]!.client.maskedInput(encoded: encoded, shares: relay.shares, sharedKeys: relay.sharers)
        precondition(1.littleEndian == 1, "the wire format is little-endian")
        let littleEndian = input.values.withUnsafeBytes { Array(UnsafeBufferPointer(start: $0.baseAddress?.assumingMemoryBound(to: UInt8.self), count: $0.count)) }
        try await send(littleEndian, header, key: key, what: "masked update", broker: broker)
        await crashPoint("masked")
    }
}
