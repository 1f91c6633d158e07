/// A call that did not answer within its time limit.
struct TimeLimitExceeded: Error, CustomStringConvertible {
    let limit: Duration
    var description: String { "no answer within \(limit)" }
}

/// `call`'s result, or `TimeLimitExceeded` once `limit` has passed; the call is then cancelled (a
/// store's wait for a connection ends with it) and awaited. For the calls a peer's request waits
/// on: a database that stopped answering must fail the request, not hold it for ever.
func answered<T: Sendable>(within limit: Duration, _ call: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await call() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TimeLimitExceeded(limit: limit) }
        return value
    }
}
