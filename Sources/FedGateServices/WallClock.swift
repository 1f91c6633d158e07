import Foundation

/// Where a service reads the time of day: the system's clock, or a test's. (Deadlines and silences
/// are measured on `ContinuousClock` and the awake clock; the round machine has no clock of its own.)
public struct WallClock: Sendable {
    public let now: @Sendable () -> Date

    public init(_ now: @escaping @Sendable () -> Date) { self.now = now }

    public static let system = WallClock { Date() }
}
