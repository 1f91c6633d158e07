import Foundation
import Logging

/// Where a test stops a broker or gateway process in the middle of a round, as a power cut (SIGKILL)
/// or a hung machine (SIGSTOP) would. Injected through the settings: the round code never reads the
/// environment. The `fedgate` command reads `FEDGATE_TESTING_CRASH_AT` (broker) and
/// `FEDGATE_TESTING_GATEWAY_CRASH_AT` (gateway) in debug builds only; a release build has none.
public struct CrashPoints: Sendable, Equatable {
    public enum Effect: String, Sendable { case kill, stop }

    /// By point: `phase:round` at the broker, `phase` at a gateway.
    public let points: [String: Effect]

    public static let none = CrashPoints(points: [:])

    public init(points: [String: Effect]) { self.points = points }

    /// Points separated by commas, each `phase:round` (kill) or `phase:round:stop` (stop), or a
    /// bare `phase` for a gateway.
    public init(parsing text: String) {
        var points: [String: Effect] = [:]
        for item in text.split(separator: ",").map(String.init) where !item.isEmpty {
            if item.hasSuffix(":stop") { points[String(item.dropLast(5))] = .stop } else { points[item] = .kill }
        }
        self.init(points: points)
    }

    /// What happens at `phase` (of `round`, at the broker), if anything.
    public func effect(at phase: String, round: Int? = nil) -> Effect? {
        points[round.map { "\(phase):\($0)" } ?? phase]
    }

    /// Stops this process if a point is set at `phase`, saying so first.
    func reach(_ phase: String, round: Int? = nil, logger: Logger) {
        guard let effect = effect(at: phase, round: round) else { return }
        let metadata: Logger.Metadata = ["phase": "\(phase)", "round": "\(round.map(String.init) ?? "-")"]
        switch effect {
        case .kill:
            logger.critical("test crash point reached; killing this process", metadata: metadata)
            kill(getpid(), SIGKILL)
        case .stop:
            logger.critical("test pause point reached; stopping this process", metadata: metadata)
            kill(getpid(), SIGSTOP)
        }
    }
}
