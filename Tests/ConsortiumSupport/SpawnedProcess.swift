import CFedGateSystem
import Foundation
import Synchronization

/// A child process started with posix_spawn (`fedgate_spawn`), not Foundation's `Process`: on Linux
/// this toolchain's `Process.run` over-reads `/proc/self/fd` entries and, now and then, crashes the
/// whole test process (seen in a CI rehearsal; swift-corelibs-foundation PR #5472). The child leads
/// its own process group (as `Process` made it), its output goes to a file, and it keeps no
/// descriptor of the tests' but the three standard ones. Answers what the tests asked of `Process`.
final class SpawnedProcess: Sendable {
    let processIdentifier: Int32
    /// The wait status once the child was reaped.
    private let reaped = Mutex<Int32?>(nil)

    init(executable: String, arguments: [String], environment: [String: String], directory: String, output: String) throws {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = fedgate_spawn(&pid, executable, argv, envp, directory, output, 1)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        processIdentifier = pid
    }

    /// Whether the child has not exited yet (it is reaped, without blocking, once it has).
    var isRunning: Bool {
        reaped.withLock { status in
            guard status == nil else { return false }
            var s: Int32 = 0
            let r = waitpid(processIdentifier, &s, WNOHANG)
            if r == processIdentifier { status = s; return false }
            return r == 0
        }
    }

    /// The exit code, or the signal that ended the child (as `Process.terminationStatus`); valid once it is not running.
    var terminationStatus: Int32 {
        guard let s = reaped.withLock({ $0 }) else { return 0 }
        return s & 0x7f == 0 ? (s >> 8) & 0xff : s & 0x7f
    }

    var terminationReason: Process.TerminationReason {
        guard let s = reaped.withLock({ $0 }) else { return .exit }
        return s & 0x7f == 0 ? .exit : .uncaughtSignal
    }
}
