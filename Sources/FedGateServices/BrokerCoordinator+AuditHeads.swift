import FedGateProto
import FedGateStore
import Foundation

/// The broker and its silos witness each other's audit trails: the broker sends its signed head
/// after the welcome and after each round's outcome; each gateway keeps it and answers with its
/// own, which the broker keeps. Either side can later check the other's trail against what it kept
/// (`fedgate audit heads --witnessed`, `fedgate audit verify --witness`).
extension BrokerCoordinator {
    /// Starts sending the broker's signed heads and keeping the silos'.
    public func exchangeAuditHeads(_ keeper: AuditHeadKeeper, caPEM: String) {
        auditHeads = (keeper, caPEM)
    }

    /// Sends the broker's current signed head to `silos` (a fresh signature if the chain grew).
    func sendAuditHead(to silos: [String]) {
        guard let keeper = auditHeads?.keeper, !silos.isEmpty else { return }
        Task {
            do {
                guard let head = try await keeper.current() else { return }
                self.send(.auditHead(Fedgate_V1_SignedAuditHead(head)), to: silos)
            } catch {
                self.logger.warning("could not sign the audit head for the silos", metadata: ["error": "\(error)"])
            }
        }
    }

    /// A silo's signed head: kept as a witness of its trail if it is the silo's own and genuine (at
    /// most one per silo every 200 ms is looked at: an honest gateway sends one a round).
    public func witness(_ message: Fedgate_V1_SignedAuditHead, from silo: String, token: UInt64) async {
        heartbeat(silo: silo, token: token)
        guard isSession(silo, token), let (_, caPEM) = auditHeads else { return }
        if let last = lastWitnessed[silo], ContinuousClock.now - last < .milliseconds(200) { return }
        lastWitnessed[silo] = .now
        guard let head = message.auditHead else {
            logger.warning("audit head refused", metadata: ["silo": "\(silo)", "reason": "its fields cannot be a signed head"])
            return
        }
        if let refusal = await AuditHeadCheck.keep(head, from: silo, caPEM: caPEM, in: store, logger: logger) {
            logger.warning("audit head refused", metadata: ["silo": "\(silo)", "reason": "\(refusal)"])
        }
    }
}
