import ArgumentParser
import FedGateProto
import FedGateStore
import Foundation

extension AuditCommand {
    /// `fedgate audit export`: the trails of stores, of the broker over mutual TLS, and of files
    /// silos exported, each chain verified, as JSON lines, CSV, XML or the HTML compliance report.
    struct Export: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Export the audit trail (after verifying each chain) as JSON lines, CSV, XML or a self-contained HTML report.",
            discussion: """
                Read the trails from stores (--store, --also-store), from the broker over mutual TLS with your own certificate \
                (--broker HOST:PORT --cert --key --ca: a compliance officer needs no database access), and from files a silo \
                exported with --format jsonl (--also-trail: its chain is verified from the file). Exit status: 0 every chain \
                intact, 2 a chain broken, 64 an option or file that cannot be used.
                """)
        @Option(help: "A store: sqlite:PATH or postgres://user@host:port/database.") var store: String?
        @Option(help: "Another store to include (a silo's), repeatable.") var alsoStore: [String] = []
        @Option(help: "A silo's trail exported with --format jsonl, repeatable.") var alsoTrail: [String] = []
        @Option(help: "Folder of numbered SQL migrations (default: the ones built into fedgate).") var migrations: String?
        @Option(help: "Read the broker's trail over mutual TLS: host:port.") var broker: String?
        @Option(help: "The broker's name in its certificate.") var serverName = "broker"
        @Option(help: "Your certificate (PEM), with --broker.") var cert: String?
        @Option(help: "Your private key (PEM), with --broker.") var key: String?
        @Option(help: "The consortium CA's certificate (PEM), with --broker.") var ca: String?
        @Option(help: "jsonl, csv, xml or html.") var format: Format
        @Option(help: "Only records at or after this date (YYYY-MM-DD or ISO 8601).") var from: String?
        @Option(help: "Only records at or before this date (YYYY-MM-DD is the whole day).") var to: String?
        @Option(help: "Only records by, about or naming this silo.") var silo: String?
        @Option(help: "Only records about this plan (content hash).") var plan: String?
        @Option(help: "The file to write.") var out: String

        static func date(_ text: String, option: String, endOfDay: Bool) throws -> Date {
            if let d = try? Date(text, strategy: .iso8601) { return d }
            if let d = try? Date(text + "T00:00:00Z", strategy: .iso8601) { return endOfDay ? d.addingTimeInterval(86_400 - 0.001) : d }
            throw ValidationError("--\(option): '\(text)' is not a date (YYYY-MM-DD or ISO 8601)")
        }

        func execute() async throws {
            let filter = AuditFilter(from: try from.map { try Self.date($0, option: "from", endOfDay: false) },
                                     to: try to.map { try Self.date($0, option: "to", endOfDay: true) }, silo: silo, plan: plan)
            if let f = filter.from, let t = filter.to, f > t { throw ValidationError("--from is after --to") }
            guard store != nil || broker != nil || !alsoTrail.isEmpty else {
                throw ValidationError("name a trail: --store, --broker HOST:PORT (with --cert, --key, --ca) or --also-trail FILE")
            }
            let trails = try await remoteTrail() + (try await storeTrails()) + (try alsoTrail.flatMap { try AuditTrailFile.read($0) })
            let text: String
            switch format {
            case .jsonl: text = try AuditExport.jsonl(trails, filter: filter)
            case .csv: text = AuditExport.csv(trails, filter: filter)
            case .xml: text = AuditXML.document(trails, filter: filter)
            case .html:
                let report = ComplianceReport(trails, filter: filter)
                for u in report.unreadable {
                    FileHandle.standardError.write(Data("\(u.source): record \(u.seq) (\(u.action)) is left out of the report: \(u.problem)\n".utf8))
                }
                text = ComplianceHTML.document(report, filter: filter)
            }
            do { try text.write(to: URL(fileURLWithPath: out), atomically: true, encoding: .utf8) } catch {
                throw ValidationError("--out: cannot write \(out): \(error.localizedDescription)")
            }
            for t in trails { print("\(t.source): \(t.verification.description)") }
            let kept = trails.reduce(0) { $0 + $1.records.filter(filter.keeps).count }
            print("\(kept) records written to \(out) as \(format.rawValue)")
            if trails.contains(where: { !$0.intact }) { throw ExitCode(2) }
        }

        private func storeTrails() async throws -> [AuditTrail] {
            var trails: [AuditTrail] = []
            for url in (store.map { [$0] } ?? []) + alsoStore {
                let backend: any ConsortiumStore
                do {
                    backend = try openStore(url)
                    _ = try await backend.applyMigrations(try Migration.load(from: migrations.map { URL(fileURLWithPath: $0) }))
                } catch let e as LedgerError { throw ValidationError("--store \(url): \(e)") }
                trails.append(AuditTrail(source: Self.name(url), records: try await backend.auditRecords()))
            }
            return trails
        }

        /// The broker's whole trail, page by page, over mutual TLS with the caller's certificate
        /// (compliance officers and admins may read it; every read is the broker's to refuse).
        private func remoteTrail() async throws -> [AuditTrail] {
            guard let broker else { return [] }
            guard let cert, let key, let ca else { throw ValidationError("--broker needs --cert, --key and --ca (your own certificate)") }
            let records = try await BrokerClientOptions.call(broker: broker, serverName: serverName, cert: cert, key: key, ca: ca, timeout: 30) { client in
                var records: [AuditRecord] = []
                while true {
                    var request = Fedgate_V1_ReadAuditRequest()
                    request.afterSequence = UInt64(records.last?.seq ?? 0)
                    request.limit = 10_000
                    let page = try await client.readAudit(request) { response in
                        try await response.messages.reduce(into: [AuditRecord]()) { $0.append(Self.record($1)) }
                    }
                    records += page
                    if page.isEmpty { return records }
                }
            }
            return [AuditTrail(source: "broker \(broker)", records: records)]
        }

        static func record(_ r: Fedgate_V1_AuditRecord) -> AuditRecord {
            AuditRecord(seq: Int(r.sequence), at: Date(timeIntervalSince1970: r.at), actor: r.actor, action: r.action, subject: r.subject,
                        payload: r.detailJson, previousHash: r.previousHash, hash: r.hash)
        }

        /// A store's name in reports: its file name, or the database name, without credentials.
        static func name(_ url: String) -> String {
            if url.hasPrefix("sqlite:") { return URL(fileURLWithPath: String(url.dropFirst("sqlite:".count))).deletingPathExtension().lastPathComponent }
            if let c = URLComponents(string: url) { return "postgres \(c.host ?? "")\(c.path)" }
            return "store"
        }
    }
}

extension AuditTrailFile {
    /// The trails of a file a silo exported; an unreadable file is a usage error naming it.
    static func read(_ path: String) throws -> [AuditTrail] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ValidationError("--also-trail: \(path) cannot be read: \(error.localizedDescription)")
        }
        do { return try parse(text, file: path) } catch let e as Unreadable { throw ValidationError("--also-trail: \(e)") }
    }
}
