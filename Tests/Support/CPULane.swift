import Dispatch

/// One serial lane, off Swift's cooperative thread pool, for the suite's CPU-heavy checks.
///
/// Swift Testing starts every test at once on the cooperative pool, which has one thread per core
/// (two here). A synchronous test that computes for tens of seconds holds one of them, and every
/// other test's next step waits behind the queue: on CI the process tests' broker, frozen at a
/// pause point, stayed frozen for 74 s while the test that was to thaw it waited for a thread.
/// Heavy checks run here instead, one at a time, in the same task (so `#expect` still reports
/// to its test), and the pool stays free for the tests that react to other processes.
public func onCPULane<T: Sendable>(_ body: () async throws -> T) async rethrows -> T {
    try await withTaskExecutorPreference(CPULane.shared, operation: body)
}

final class CPULane: TaskExecutor, @unchecked Sendable {
    static let shared = CPULane()
    private let queue = DispatchQueue(label: "fedgate.tests.cpu-lane")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
