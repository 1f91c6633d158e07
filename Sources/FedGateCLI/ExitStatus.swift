import ArgumentParser
import FedGatePolicy
import FedGateStore
import Foundation

/// The exit statuses of fedgate's deciding commands (`policy check`, `plan decide`, `audit verify`),
/// so that a script or CI job can tell an outcome from an error. policies/README.md and
/// docs/deployment.md list them.
enum ExitStatus: Int32 {
    /// The plan is accepted; the policy is valid; the chain is intact.
    case accepted = 0
    /// The plan is refused by the policy.
    case refused = 1
    /// The audit chain, ledger or a signed head disagrees with the records (tampering or loss).
    case broken = 2
    /// The plan waits for a person's approval at the silo.
    case needsApproval = 3
    /// A file, option or argument cannot be used (EX_USAGE): nothing was decided.
    case unusableInput = 64
    /// The store cannot be reached (EX_UNAVAILABLE): nothing was decided; try again.
    case unavailable = 69
    /// Anything else went wrong (EX_SOFTWARE): nothing was decided.
    case internalError = 70

    init(_ outcome: PlanDecision.Outcome) {
        switch outcome {
        case .accepted: self = .accepted
        case .refused: self = .refused
        case .needsApproval: self = .needsApproval
        }
    }

    /// Ends the command with this status when it is not success (ArgumentParser prints nothing more).
    func exitIfNotAccepted() throws {
        if self != .accepted { throw ExitCode(rawValue) }
    }
}

/// A failure that ends a command with its own status and one line on standard error, without the
/// usage text ArgumentParser prints for a `ValidationError` (a file's error is not a usage error).
struct CommandFailure: Error, CustomStringConvertible {
    let status: ExitStatus
    let description: String

    static func unusable(_ message: String) -> CommandFailure { CommandFailure(status: .unusableInput, description: message) }

    /// What an error means for a deciding command: never the status of an outcome.
    static func classify(_ error: any Error) -> any Error {
        switch error {
        case is ExitCode, is CommandFailure: return error
        case let e as PolicyFileError: return unusable(e.description)
        case let e as ValidationError: return unusable(e.message)
        case let e as LedgerError:
            if case .unavailable = e { return CommandFailure(status: .unavailable, description: e.description) }
            return CommandFailure(status: .internalError, description: e.description)
        default: return CommandFailure(status: .internalError, description: "\(error)")
        }
    }
}

/// Runs a deciding command's body so that no error leaves with the status of an outcome.
func deciding<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch { throw CommandFailure.classify(error) }
}

/// The synchronous form of `deciding`.
func deciding<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch { throw CommandFailure.classify(error) }
}

/// Loads a policy or plan file, its error an unusable input naming file, line, column and field.
func loadFile<T>(_ load: (URL) throws -> T, _ path: String) throws -> T {
    do { return try load(URL(fileURLWithPath: path)) } catch let e as PolicyFileError { throw CommandFailure.unusable(e.description) }
}
