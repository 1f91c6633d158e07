import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// The tests' own process launcher (posix_spawn, not Foundation's `Process`).
@Suite("Processes the tests start")
struct SpawnedProcessTests {
    @Test("a child's exit code and a signal that ended it are told apart; it leads its own process group and holds no descriptor of ours beyond the standard three")
    func exitsAndDescriptors() async throws {
        let consortium = try Consortium()
        let exits = try Processes.Running(["-c", "exit 3"], log: consortium.file("exit.log"), executable: "/bin/sh")
        #expect(await exits.exit(within: 60) == 3 && exits.process.terminationReason == .exit)
        let sleeper = try Processes.Running(["-c", "ls /proc/self/fd; ps -o pgid= -p $$; exec sleep 600"], log: consortium.file("sleep.log"),
                                            executable: "/bin/sh")
        let listed = await eventually { sleeper.output.split(separator: "\n").count >= 2 }
        #expect(listed)
        sleeper.signal(SIGKILL)
        #expect(await sleeper.exit(within: 60) == SIGKILL && sleeper.process.terminationReason == .uncaughtSignal)
        let lines = sleeper.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        // ls lists 0, 1, 2 and the descriptor it reads the folder with; the shell's own pgid is its pid.
        let descriptors = Set(lines.dropLast().compactMap { Int($0) })
        #expect(descriptors.isSubset(of: [0, 1, 2, 3]) && descriptors.isSuperset(of: [0, 1, 2]), "\(lines)")
        #expect(lines.last == "\(sleeper.process.processIdentifier)", "\(lines)")
    }
}
