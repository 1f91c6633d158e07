import FedGateStore
import FedGateTransport
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

// The broker's long-running parts, each a service with one job, composed by `BrokerHost.serve`
// under swift-service-lifecycle. The group stops them in reverse order of its list: the caller's
// body, the lease, the plans, the audit head's last signature, the revocation poll.

/// Revocations recorded in the store (`fedgate silo revoke`) reach the running broker within a
/// poll; refusals counted since the last poll are written out.
struct RevocationPoll: Service {
    let store: any BrokerStore
    let every: Duration
    let connectionGuard: ConnectionGuard
    let interceptor: AuthorizationInterceptor

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: every)
                connectionGuard.flushRefusals()
                interceptor.flushRefusals()
                guard let revoked = try? await store.revocations() else { continue }
                connectionGuard.revoke(identities: revoked.identities, fingerprints: revoked.fingerprints, serials: revoked.serials)
            }
        }
    }
}

/// The audit chain's head, signed with the broker's key while the chain grows, and once more when
/// the broker stops (after its plans stopped, so the last head names what they recorded).
struct AuditHeadSigning: Service {
    let keeper: AuditHeadKeeper
    let every: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown { await keeper.run(every: every) }
    }
}

/// The plans this broker runs: on shutdown they stop, and stay running in the store for the next
/// broker (a restart, or the standby).
struct PlanRunner: Service {
    let coordinator: BrokerCoordinator

    func run() async throws {
        // Cancelled rather than shut down gracefully (the group failed): the plans stop all the same.
        try? await gracefulShutdown()
        await coordinator.shutdown()
    }
}

/// The leader lease, renewed every third of its duration; ends the group with `LeaseLost` once
/// another broker took it or the store stayed unreachable until it lapsed.
struct LeaseKeeping: Service {
    let lease: BrokerLeaseSettings
    let held: BrokerLease
    let store: any BrokerStore
    let logger: Logger

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await BrokerHost.keep(lease, held, store: store, logger: logger) }
        } catch is CancellationError {
            return
        }
    }
}

/// A gateway's link to its broker (`Gateway.keepLinked`), until the gateway stops.
struct BrokerLink: Service {
    let gateway: Gateway

    func run() async throws {
        await cancelWhenGracefulShutdown { await gateway.keepLinked() }
    }
}

/// The caller's work while the broker serves; its end (or failure) stops the group.
struct ServingBody<R: Sendable>: Service {
    let body: @Sendable () async throws -> R
    let result: ResultBox<R>

    func run() async throws { result.set(try await body()) }
}

/// Where a service leaves its result for the code that ran the group.
final class ResultBox<R: Sendable>: Sendable {
    private let value = Mutex<R?>(nil)
    func set(_ r: R) { value.withLock { $0 = r } }
    func get() -> R? { value.withLock { $0 } }
}

extension ServiceGroup {
    /// A group of `services` in which any one ending or failing stops the others, in reverse order.
    init(running services: [any Service], logger: Logger) {
        self.init(configuration: ServiceGroupConfiguration(services: services.map { service in
            ServiceGroupConfiguration.ServiceConfiguration(service: service, successTerminationBehavior: .gracefullyShutdownGroup,
                                                           failureTerminationBehavior: .gracefullyShutdownGroup)
        }, logger: logger))
    }
}
