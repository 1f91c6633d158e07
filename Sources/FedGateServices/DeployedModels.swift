import FedGateTransport
import Foundation

/// The registry versions deployed to a silo, kept in its own folder (`deployments:` in the gateway
/// config): the version it runs and the one before it (so a rollback needs no download), each as
/// its safetensors file, and `deployed.json` saying which is which. Every file is written to a
/// temporary name and renamed, the record last: a crash leaves the earlier state whole.
public struct DeployedModels: Sendable {
    public let folder: URL

    public struct Record: Codable, Sendable, Equatable {
        public var version: Int
        public var sha256: String
        /// The model inputs the broker asked this silo to watch.
        public var watch: [String]
        /// The version run before, with its file's SHA-256 (nil: none).
        public var previous: Previous?
        /// The SHA-256 of the last fresh-rows window released about this version (a window is
        /// released once: the same rows again spend nothing more).
        public var lastWindow: String?

        public struct Previous: Codable, Sendable, Equatable {
            public var version: Int
            public var sha256: String
        }
    }

    public init(folder: URL) { self.folder = folder }

    var recordFile: URL { folder.appendingPathComponent("deployed.json") }
    func file(_ version: Int) -> URL { folder.appendingPathComponent("v\(version).safetensors") }

    /// What the silo runs (nil: nothing deployed).
    public func current() throws -> Record? {
        guard FileManager.default.fileExists(atPath: recordFile.path) else { return nil }
        do { return try JSONDecoder().decode(Record.self, from: Data(contentsOf: recordFile)) } catch {
            throw GatewayError.deployment(version: 0, problem: "\(recordFile.path) cannot be read (\(error)); remove it to start over")
        }
    }

    /// The file of the version the silo runs, checked against its recorded SHA-256.
    public func currentFile() throws -> (record: Record, bytes: [UInt8])? {
        guard let record = try current() else { return nil }
        guard let bytes = try kept(record.version, sha256: record.sha256) else {
            throw GatewayError.deployment(version: record.version, problem: "\(file(record.version).path) is missing or does not hash to the recorded SHA-256")
        }
        return (record, bytes)
    }

    /// A kept version's bytes when its file hashes to `sha256`.
    public func kept(_ version: Int, sha256: String) throws -> [UInt8]? {
        guard let data = FileManager.default.contents(atPath: file(version).path) else { return nil }
        return TransferDigest.hex(data) == sha256.lowercased() ? Array(data) : nil
    }

    /// Makes `version` the one the silo runs, the current one becoming the previous; files of
    /// other versions are removed. Version 0 runs nothing: the record is removed and the file of the
    /// version left is kept (deployed again, it needs no download).
    public func install(_ version: Int, sha256: String, bytes: [UInt8]?, watch: [String]) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let now = try current()
        guard version != 0 else {
            try? FileManager.default.removeItem(at: recordFile)
            try sweep(keeping: [now?.version].compactMap { $0 })
            return
        }
        if let bytes { try write(Data(bytes), to: file(version)) }
        let previous = now.flatMap { $0.version == version ? $0.previous : Record.Previous(version: $0.version, sha256: $0.sha256) }
        try save(Record(version: version, sha256: sha256, watch: watch, previous: previous, lastWindow: now?.version == version ? now?.lastWindow : nil))
        try sweep(keeping: [version, previous?.version].compactMap { $0 })
    }

    /// Notes the fresh-rows window just released about the version the silo runs.
    public func released(window: String) throws {
        guard var record = try current() else { return }
        record.lastWindow = window
        try save(record)
    }

    private func save(_ record: Record) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try write(try encoder.encode(record), to: recordFile)
    }

    private func write(_ data: Data, to url: URL) throws {
        let temporary = url.appendingPathExtension("partial")
        try data.write(to: temporary)
        guard rename(temporary.path, url.path) == 0 else {
            throw GatewayError.deployment(version: 0, problem: "\(url.path) cannot be written (rename: errno \(errno))")
        }
    }

    private func sweep(keeping versions: [Int]) throws {
        let keep = Set(versions.map { file($0).lastPathComponent })
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        where name.hasSuffix(".safetensors") && !keep.contains(name) {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
        }
    }
}
