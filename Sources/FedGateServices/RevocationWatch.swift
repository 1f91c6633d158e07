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
    public init(store: any PartyRegistry, interval: Duration = .seconds(1)) async throws {
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
        let l = list.withLock { $0 }
        return ConnectionGuard.revocation(of: certificate, identities: l.identities, fingerprints: l.fingerprints, serials: l.serials)
    }
}
