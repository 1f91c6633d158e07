import ArgumentParser
import Foundation
import Testing
@testable import FedGateCLI
import FedGatePolicy

/// `fedgate policy check` over a corpus of malformed and hostile policy and plan files
/// (`Tests/Corpus/policy-check/corpus.tsv`): each gets the exit status a script can trust
/// (0 accepted, 1 refused, 3 needs approval, 64 unusable input) and a message naming the field.
@Suite("fedgate policy check: a corpus of hostile and careless files")
struct PolicyCorpusTests {
    static let folder = "Tests/Corpus/policy-check"

    struct Case: Sendable, CustomStringConvertible {
        let policy: String
        let plan: String?
        let status: Int32
        let needle: String
        var description: String { "\(policy) \(plan ?? "-")" }
    }

    static let cases: [Case] = {
        guard let text = try? String(contentsOfFile: "\(folder)/corpus.tsv", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return Case(policy: "\(folder)/\(f[0])", plan: f[1] == "-" ? nil : "\(folder)/\(f[1])", status: Int32(f[2]) ?? -1, needle: f[3])
        }
    }()

    /// What the command decides for these arguments, as its exit status and its message.
    static func check(_ arguments: [String]) -> (status: Int32, message: String) {
        do {
            let command = try PolicyCommand.Check.parse(arguments)
            let result = try deciding { try command.outcome() }
            return (result.status.rawValue, result.text)
        } catch let failure as CommandFailure {
            return (failure.status.rawValue, failure.description)
        } catch {
            return (-1, "not classified: \(error)")
        }
    }

    @Test("the corpus is there and covers every outcome")
    func corpusIsThere() {
        #expect(Self.cases.count >= 70)
        #expect(Set(Self.cases.map(\.status)) == [0, 1, 3, 64])
    }

    @Test("each committed file gets its exit status and names its field", arguments: cases)
    func committed(_ c: Case) {
        let result = Self.check([c.policy] + (c.plan.map { ["--plan", $0] } ?? []))
        #expect(result.status == c.status, "\(c): \(result.message)")
        #expect(result.message.contains(c.needle), "\(c): \(result.message)")
        if c.status == 64 { #expect(result.message.hasPrefix(FileManager.default.currentDirectoryPath + "/" + (c.plan ?? c.policy) + ":"), "names the file first: \(result.message)") }
    }

    /// Inputs too large (or too odd) to commit, made where the test runs.
    @Test("oversized files, values, lists and alias expansions, devices, folders and missing files are refused before they cost memory")
    func generated() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedgate-corpus-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let plan = try String(contentsOfFile: "\(Self.folder)/plan-ok.yaml", encoding: .utf8)
        let policy = "\(Self.folder)/policy-base.yaml"
        func write(_ name: String, _ text: String) throws -> String {
            let url = dir.appendingPathComponent(name)
            try text.write(to: url, atomically: true, encoding: .utf8)
            return url.path
        }
        let long = String(repeating: "x", count: 70_000)
        let cases: [(String, String, String)] = [
            ("10 MB purpose", try write("huge.yaml", plan.replacingOccurrences(of: "purpose: research", with: "purpose: " + String(repeating: "y", count: 10_000_000))),
             "(file): at most 1048576 bytes; this file has"),
            ("70 kB purpose", try write("long-value.yaml", plan.replacingOccurrences(of: "purpose: research", with: "purpose: \(long)")),
             ":2:10: purpose: is 70000 bytes long; one value may have at most 65536"),
            ("100 000 columns", try write("columns.yaml", plan.replacingOccurrences(of: "columns: [mean_radius,", with: "columns: [" + (0..<100_000).map { "c\($0)" }.joined(separator: ",") + ",")),
             "columns: lists 100004 entries; at most 10000"),
            ("200 aliases of a 60 kB value", try write("aliases.yaml", "x: &big \(String(repeating: "z", count: 60_000))\n" + plan.replacingOccurrences(of: "columns: [mean_radius,", with: "columns: [" + Array(repeating: "*big", count: 200).joined(separator: ",") + ",mean_radius,")),
             "once its aliases (*name) are expanded"),
            ("a device", "/dev/zero", "(file): a regular file, not a device"),
            ("a folder", dir.path, "(file): a regular file, not a device"),
            ("a missing file", dir.appendingPathComponent("absent.yaml").path, "(file): a readable file"),
        ]
        for (what, path, needle) in cases {
            let result = Self.check([policy, "--plan", path])
            #expect(result.status == 64, "\(what): \(result.message)")
            #expect(result.message.contains(path) && result.message.contains(needle), "\(what): \(result.message)")
        }
    }

    /// Runs the `fedgate` program with `arguments`: its exit status and what it printed on each stream.
    static func run(_ fedgate: URL, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = fedgate
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    @Test("only a command line that is itself wrong prints the usage; a store that cannot be used is one line; --version names the build")
    func usageOnlyForUsageErrors() throws {
        let fedgate = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fedgate")
        try #require(FileManager.default.isExecutableFile(atPath: fedgate.path), "build the fedgate program first (swift build)")
        func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) { try Self.run(fedgate, arguments) }
        let wrongFlag = try run(["ledger", "show", "--no-such-flag"])
        #expect(wrongFlag.status == 64 && wrongFlag.stderr.contains("Usage:"), "\(wrongFlag.stderr)")
        let badStore = try run(["ledger", "show", "--store", "sqlite:/no/such/folder/ledger.sqlite", "--dataset", "x"])
        #expect(badStore.status != 0 && badStore.stderr.hasPrefix("Error: ") && !badStore.stderr.contains("Usage:"), "\(badStore.stderr)")
        let version = try run(["--version"])
        #expect(version.status == 0 && version.stdout.hasPrefix("fedgate ") && version.stdout.split(separator: ".").count == 3, "\(version.stdout)")
    }

    @Test("the fedgate program exits with the documented statuses, and an unusable file prints one line, not the usage")
    func programExitStatuses() throws {
        let fedgate = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fedgate")
        try #require(FileManager.default.isExecutableFile(atPath: fedgate.path), "build the fedgate program first (swift build)")
        func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) { try Self.run(fedgate, ["policy", "check"] + arguments) }
        let f = Self.folder
        let expectations: [([String], Int32)] = [
            (["\(f)/policy-base.yaml", "--plan", "\(f)/plan-ok.yaml"], 0),
            (["\(f)/policy-base.yaml", "--plan", "\(f)/plan-refused-purpose.yaml"], 1),
            (["\(f)/policy-approval.yaml", "--plan", "\(f)/plan-ok.yaml", "--json"], 3),
            (["\(f)/policy-base.yaml", "--plan", "\(f)/plan-unknown-strategy.yaml"], 64),
            (["\(f)/policy-model-typo.yaml"], 64),
            (["\(f)/policy-base.yaml", "--at", "tomorrow"], 64),
        ]
        for (arguments, status) in expectations {
            let r = try run(arguments)
            #expect(r.status == status, "\(arguments): \(r.stdout) \(r.stderr)")
            if status == 64 {
                #expect(r.stdout.isEmpty && r.stderr.hasPrefix("Error: ") && !r.stderr.contains("Usage:"), "\(arguments): \(r.stderr)")
                #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
            } else {
                #expect(!r.stdout.isEmpty, "the decision is printed whatever it is: \(arguments)")
            }
        }
    }
}
