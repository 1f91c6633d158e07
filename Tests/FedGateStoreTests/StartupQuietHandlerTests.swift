import Logging
import Synchronization
import Testing
@testable import FedGateStore

/// The PostgreSQL pool's logger: PostgresNIO's "run() hasn't been called yet" notice, which it waits
/// out, no longer alarms an operator at every command's start; everything else passes unchanged.
@Suite("The PostgreSQL pool's log")
struct StartupQuietHandlerTests {
    final class Recorder: LogHandler, @unchecked Sendable {
        let events = Mutex<[(Logger.Level, String)]>([])
        var logLevel: Logger.Level = .info
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { events.withLock { $0.append((event.level, event.message.description)) } }
    }

    @Test("the pool-not-started notice is kept at debug level; other warnings and errors pass as they are")
    func quietAtStartup() {
        let recorder = Recorder()
        var logger = Logger(label: "test") { _ in StartupQuietHandler(wrapping: recorder) }
        logger.logLevel = .info
        logger.warning("Trying to lease connection from `PostgresClient`, but `PostgresClient.run()` hasn't been called yet.")
        logger.warning("connection to 127.0.0.1:5432 failed")
        logger.error("Trying to lease connection from `PostgresClient`, but `PostgresClient.run()` hasn't been called yet.")
        #expect(recorder.events.withLock { $0.map { "\($0.0) \($0.1.prefix(24))" } } == [
            "warning connection to 127.0.0.1:", "error Trying to lease connecti"])
        logger.logLevel = .debug
        logger.warning("Trying to lease connection from `PostgresClient`, but `PostgresClient.run()` hasn't been called yet.")
        #expect(recorder.events.withLock { $0.last?.0 } == .debug)
    }
}
