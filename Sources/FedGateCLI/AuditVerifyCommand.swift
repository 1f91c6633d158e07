import ArgumentParser
import FedGateServices
import FedGateStore
import Foundation
import X509

extension AuditCommand {
    /// `fedgate audit verify`: the chain's links, the ledger against the chain, the signed heads.
    struct Verify: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Check the audit chain: its links, the ledger against it, its signed heads, and heads other parties witnessed.",
            discussion: """
                Names the first record edited, removed or reordered; every ledger row that differs from what the chain \
                recorded; every signed head the chain no longer holds (truncated or rewritten). With --ca the heads' \
                certificates are checked against the consortium CA; --expected-head and --witness compare the chain with \
                a head another party kept (from `fedgate audit heads` on this store, taken earlier).

                Exit status: 0 intact, 2 a record, ledger row or head disagrees, 64 a file or option that cannot be \
                used, 69 the store cannot be reached, 70 an internal error.
                """)
        @OptionGroup var options: StoreOptions
        @Option(help: "The consortium CA certificate (PEM) that must have issued the heads' signers.") var ca: String?
        @Option(name: .customLong("expected-head"), help: "SEQ:HASH of a record the chain must still hold.") var expectedHead: [String] = []
        @Option(help: "A file of signed heads kept by another party (JSON lines, from `fedgate audit heads`), repeatable.") var witness: [String] = []

        func execute() async throws { try await deciding { try await verify() } }

        func verify() async throws {
            let backend = try await options.service()
            let records = try await backend.auditRecords()
            var problems: [String] = []
            let chain = AuditVerification.verify(records)
            print(chain.description)
            if case .broken = chain { problems.append(chain.description) }
            if case .intact = chain, let last = records.last {
                // Kept outside the database (a ticket, a notary, another party), it proves later that
                // the chain up to here was not rewritten: `--expected-head SEQ:HASH`.
                print("head: \(last.seq):\(last.hash)")
            }

            let (budgets, entries) = try await backend.ledgerTables()
            let ledger = LedgerReplay.differences(records: records, budgets: budgets, entries: entries)
            print(ledger.isEmpty ? "ledger agrees with the chain: \(budgets.count) data sets, \(entries.count) entries" : "ledger differs from the chain:")
            for d in ledger { print("  ✗ \(d)") }
            problems += ledger

            let own = try await backend.auditHeads()
            var witnessed: [AuditHead] = []
            for file in witness { witnessed += try Self.heads(in: file) }
            for (i, text) in expectedHead.enumerated() {
                let parts = text.split(separator: ":")
                guard parts.count == 2, let seq = Int(parts[0]) else {
                    throw ValidationError("--expected-head \(i + 1): '\(text)' is not SEQ:HASH (as `fedgate audit heads` prints them)")
                }
                let head = AuditHead(signer: "the expected head", seq: seq, hash: String(parts[1]), at: Date(), certificate: "", signature: "")
                if let d = head.disagreement(with: records) { problems.append(d); print("  ✗ \(d)") }
            }
            let heads = own + witnessed
            if !heads.isEmpty {
                let root: Certificate?
                if let ca {
                    do { root = try Certificate(pemEncoded: try String(contentsOfFile: ca, encoding: .utf8)) } catch {
                        throw ValidationError("--ca: \(ca) is not a readable PEM certificate")
                    }
                } else {
                    root = nil
                }
                let found = await AuditHeadCheck.problems(heads: heads, records: records, ca: root)
                let latest = own.map(\.seq).max()
                print(found.isEmpty ? "signed heads agree with the chain: \(own.count) own\(witnessed.isEmpty ? "" : ", \(witnessed.count) witnessed")"
                      + (latest.map { ", the last covering record \($0) of \(records.last?.seq ?? 0)" } ?? "") : "signed heads disagree with the chain:")
                for p in found { print("  ✗ \(p)") }
                if root == nil { print("  (the heads' certificates were not checked against a CA: pass --ca ca.pem)") }
                problems += found
            } else {
                print("no signed head to check: this store's party has not signed its chain yet")
            }
            if !problems.isEmpty { throw ExitCode(ExitStatus.broken.rawValue) }
        }

        static func heads(in file: String) throws -> [AuditHead] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw ValidationError("--witness: cannot read \(file)") }
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .secondsSince1970
            return try text.split(separator: "\n").enumerated().map { n, line in
                do { return try decoder.decode(AuditHead.self, from: Data(line.utf8)) } catch {
                    throw ValidationError("--witness: \(file):\(n + 1) is not a signed head (a line of `fedgate audit heads`)")
                }
            }
        }
    }

    /// `fedgate audit heads`: signed heads as JSON lines: this store's own, or those it witnessed.
    struct Heads: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(
            abstract: "Print signed chain heads (JSON lines): this store's own, or with --witnessed those other parties sent it.",
            discussion: """
                A gateway keeps every head the broker sent it, and the broker every silo's:                 `fedgate audit heads --store SILO --witnessed --signer broker > broker-heads.jsonl`, then                 `fedgate audit verify --store BROKER --ca ca.pem --witness broker-heads.jsonl`.
                """)
        @OptionGroup var options: StoreOptions
        @Flag(help: "The heads other parties sent this store, not its own.") var witnessed = false
        @Option(help: "With --witnessed: only this party's heads.") var signer: String?

        func execute() async throws {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .secondsSince1970
            let backend = try await options.service()
            guard witnessed || signer == nil else { throw ValidationError("--signer goes with --witnessed") }
            for head in try await witnessed ? backend.witnessedHeads(signer: signer) : backend.auditHeads() {
                print(String(decoding: try encoder.encode(head), as: UTF8.self))
            }
        }
    }
}
