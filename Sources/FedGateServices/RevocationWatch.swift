import FedGatePKI
import FedGateStore
import FedGateTransport
import Foundation
import Synchronization
import X509

/// The store's revocations, re-read every `interval`, for listeners that do not go through the
/// broker's connection guard (the metrics listener, which serves a standby broker too).
public final class RevocationWatch: Sendable {
    private let list: Mutex<RevocationList>
    private let poller = Mutex<Task<Void, Never>?>(nil)

    /// Reads the revocations now, then keeps them fresh until `stop`.
    public init(store: any RegistryBackend, interval: Duration = .seconds(1)) async throws {
        list = Mutex(try await store.revocations())
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let fresh = try? await store.revocations(), let self else { continue }
                self.list.withLock { $0 = fresh }
            }
        }
        poller.withLock { $0 = task }
    }

    deinit { poller.withLock { $0?.cancel() } }

    public func stop() { poller.withLock { $0?.cancel() } }

    /// Why `certificate` is revoked (its identity, fingerprint or serial), or nil.
    public func revocation(of certificate: Certificate) -> String? {
        let (fingerprint, serial) = ConnectionGuard.references(certificate)
        let id = try? Identity(subject: certificate.subject).id
        return list.withLock { l in
            if let id, l.identities.contains(id) { return "\(id) is revoked" }
            if l.fingerprints.contains(fingerprint) { return "the certificate with SHA-256 \(fingerprint.prefix(16))… is revoked" }
            if l.serials.contains(serial) { return "the certificate with serial \(serial) is revoked" }
            return nil
        }
    }
}
