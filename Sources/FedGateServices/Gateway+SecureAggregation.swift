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

/// This silo's side of a secure-aggregation round, on the wire: the protocol's steps are
/// `SecureSession`'s; this binds its keys to the certificate, checks the peers' bindings against
/// the CA, and sends.
extension Gateway {
    /// Fresh keys for the round, advertised with this silo's certificate binding its identity key.
    func advertise(_ task: Fedgate_V1_RoundTask, reply: AsyncStream<Fedgate_V1_GatewayMessage>.Continuation) throws {
        let minimums = SecureSession.Minimums(threshold: governor.policy.minSecureThreshold, survivors: governor.policy.minSecureSurvivors)
        let (session, advertisement) = try SecureSession.begin(task.secagg, silo: siloID, dimension: try dimension(of: task), minimums: minimums)
        let binding = try SecAggBinding(id: task.secagg.id, identityKey: session.identityKey, credentials: credentials)
        secure[RoundKey(task.planHash, task.round)] = session
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
                var verified: [SiloID: Curve25519.Signing.PublicKey] = [:]
                for binding in keys.bindings where setup.participants.contains(binding.silo) {
                    verified[binding.silo] = try await binding.verified(id: setup.id, ca: ca)
                }
                guard secure[key] != nil else { return }
                let shares = try secure[key]!.share(keys.advertisements, verified: verified)
                reply.yield(secureMessage(step.planHash, step.round, "shares", try SecAggJSON.encode(shares)))
                await crashPoint("shared", after: .milliseconds(300))
            case "relay":
                if settings.dropOutBeforeMasking {
                    secure.removeValue(forKey: key)
                    reply.finish()
                    return
                }
                secure[key]!.received(try SecAggJSON.decode(SecAggRelay.self, step.body, step: step.step))
                // Not on the task stream's loop: the upload may be long and the stream must keep flowing.
                Task {
                    do { try await self.maskAndUploadIfReady(key, broker: broker) } catch { self.maskingFailed(key, error) }
                }
            case "consistency":
                let check = try SecAggJSON.decode(ConsistencyCheck.self, step.body, step: step.step)
                let signature = try secure[key]!.sign(check)
                reply.yield(secureMessage(step.planHash, step.round, "signed", try SecAggJSON.encode(signature)))
            case "unmask":
                let request = try SecAggJSON.decode(UnmaskingRequest.self, step.body, step: step.step)
                await crashPoint("unmasking")
                let response = try secure[key]!.unmask(request)
                reply.yield(secureMessage(step.planHash, step.round, "unmasked", try SecAggJSON.encode(response)))
            default:
                throw SecureAggregationError.malformed("unknown step '\(step.step)'")
            }
        } catch {
            logger.error("secure aggregation step refused; this silo leaves the round", metadata: [
                "silo": "\(siloID)", "step": "\(step.step)", "reason": "\(error)"])
            secure.removeValue(forKey: key)
            if let below = error as? SecureSession.BelowMinimum { await leftSecureRound(key, below) }
        }
    }

    /// Once both the local update and the broker's relay are here (`SecureSession.maskIfReady`):
    /// commit the privacy spent and upload the masked, noised update.
    func maskAndUploadIfReady(_ key: RoundKey, broker: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws {
        guard secure[key] != nil, let (input, header) = try secure[key]!.maskIfReady() else { return }
        precondition(1.littleEndian == 1, "the wire format is little-endian")
        let littleEndian = input.values.withUnsafeBytes { Array(UnsafeBufferPointer(start: $0.baseAddress?.assumingMemoryBound(to: UInt8.self), count: $0.count)) }
        try await send(littleEndian, header, key: key, what: "masked update", broker: broker)
        await crashPoint("masked")
    }
}
