import ArgumentParser
import FedGatePolicy
import FedGatePrivacy
import FedGateStore
import Foundation

/// Where the store lives: `sqlite:PATH` (embedded) or `postgres://user@host:port/database`.
struct StoreOptions: ParsableArguments {
    @Option(help: "The store: sqlite:PATH or postgres://user@host:port/database.") var store: String
    @Option(help: "Folder of numbered SQL migrations (default: the ones built into fedgate).") var migrations: String?

    /// The backend named by `--store`.
    func backend() throws -> any ConsortiumStore {
        do { return try openStore(store) } catch let e as LedgerError { throw ValidationError("--store: \(e)") }
    }

    /// Applies pending migrations and returns their names.
    func migrate(_ backend: any SchemaMigrations) async throws -> [String] {
        do { return try await backend.applyMigrations(try Migration.load(from: migrations.map { URL(fileURLWithPath: $0) })) } catch let e as LedgerError {
            throw ValidationError("--store: \(e)")
        }
    }

    /// The whole store, migrated (services and commands migrate at start).
    func service() async throws -> any ConsortiumStore {
        let b = try backend()
        _ = try await migrate(b)
        return b
    }

    /// The ledger, migrated.
    func open() async throws -> PrivacyLedger { PrivacyLedger(backend: try await service()) }
}

/// `fedgate db migrate`: apply pending migrations.
struct DBCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "db", abstract: "Manage the store.", subcommands: [Migrate.self])

    struct Migrate: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Apply the numbered migrations not yet applied (an edited applied one is an error).")
        @OptionGroup var options: StoreOptions

        func execute() async throws {
            let applied = try await options.migrate(try options.backend())
            print(applied.isEmpty ? "nothing to apply: the store is up to date" : "applied: " + applied.joined(separator: ", "))
        }
    }
}

/// `fedgate ledger show`: events, ε spent and reserved, caps, remaining.
struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ledger", abstract: "Read the privacy-budget ledger.", subcommands: [Register.self, Show.self])

    struct Register: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Set each data set's caps in the ledger from a silo policy file.")
        @OptionGroup var options: StoreOptions
        @Option(help: "The silo policy file (YAML).") var policy: String
        @Option(help: "Who registers them (for the audit).") var actor = "admin"

        func execute() async throws {
            let p: SiloPolicy
            p = try loadFile(SiloPolicy.load, policy)
            let ledger = try await options.open()
            for (name, rule) in p.datasets.sorted(by: { $0.key < $1.key }) {
                try await ledger.backend.save(DatasetBudget(name: name, delta: rule.caps.deltaMax, perPlanCap: rule.caps.perPlan,
                                                            windowDays: rule.caps.window?.days, windowCap: rule.caps.window?.epsilon,
                                                            lifetimeCap: rule.caps.lifetime), actor: actor)
                print("registered \(name): per plan \(rule.caps.perPlan)" + (rule.caps.lifetime.map { ", lifetime \($0)" } ?? ""))
            }
        }
    }

    struct Show: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "A data set's ledger: events, ε committed and reserved, caps, what remains.")
        @OptionGroup var options: StoreOptions
        @Option(help: "The data set.") var dataset: String
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func execute() async throws {
            let ledger = try await options.open()
            guard let budget = try await ledger.backend.budget(dataset) else {
                throw ValidationError("--dataset: no data set '\(dataset)' in the ledger")
            }
            let entries = try await ledger.backend.entries(dataset: dataset)
            let standing = try BudgetStanding(budget, entries: entries, at: Date())
            let (committed, withReserved, remaining) = (standing.committed, standing.withReserved, standing.lifetimeRemaining)
            if json {
                try JSONOutput.print([
                    "dataset": dataset, "delta": budget.delta, "epsilon_committed": committed, "epsilon_committed_and_reserved": withReserved,
                    "caps": ["per_plan": budget.perPlanCap, "window_days": budget.windowDays ?? NSNull(), "window": budget.windowCap ?? NSNull(),
                             "lifetime": budget.lifetimeCap ?? NSNull()] as [String: Any],
                    "lifetime_remaining": remaining ?? NSNull(),
                    "entries": try entries.map { e in
                        ["id": e.id, "plan": e.planHash, "round": e.round, "state": e.state.rawValue, "created_at": e.createdAt.timeIntervalSince1970,
                         "event": try JSONSerialization.jsonObject(with: Data(try e.event.canonicalJSON().utf8))] as [String: Any]
                    },
                ])
                return
            }
            print("data set \(dataset): ε committed \(String(format: "%.4f", committed)), with reservations \(String(format: "%.4f", withReserved)) at δ = \(budget.delta)")
            print("caps: per plan \(budget.perPlanCap)" + (budget.windowCap.map { ", \(budget.windowDays ?? 0)-day \($0)" } ?? "") + (budget.lifetimeCap.map { ", lifetime \($0) (remaining \(String(format: "%.4f", remaining ?? 0)))" } ?? ""))
            for e in entries { print("  \(e.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(e.id.prefix(8))  plan \(e.planHash.prefix(12)) round \(e.round)  \(try e.event.canonicalJSON())") }
        }
    }
}

/// `fedgate audit verify`: walk the chain and name the first broken record.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "Verify and export the tamper-evident audit chain.",
                                                    subcommands: [Verify.self, Export.self, Heads.self])

    enum Format: String, ExpressibleByArgument, CaseIterable { case jsonl, csv, xml, html }
}

/// `fedgate consent add|list|withdraw`.
struct ConsentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "consent", abstract: "Keep the consent registry of a silo's data sets.",
                                                    subcommands: [Add.self, List.self, Withdraw.self])

    struct Add: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Record a consent for a data set and purpose.")
        @OptionGroup var options: StoreOptions
        @Option var dataset: String
        @Option var purpose: String
        @Option(name: .customLong("legal-basis")) var legalBasis: String
        @Option var scope: String
        @Option(help: "ISO 8601; default now.") var from: String?
        @Option(help: "ISO 8601; default open-ended.") var until: String?
        @Option(help: "Who records it (for the audit).") var actor = "admin"

        func execute() async throws {
            let f = ISO8601DateFormatter()
            guard from.map({ f.date(from: $0) != nil }) ?? true else { throw ValidationError("--from: '\(from!)' is not ISO 8601, e.g. 2026-01-01T00:00:00Z") }
            guard until.map({ f.date(from: $0) != nil }) ?? true else { throw ValidationError("--until: '\(until!)' is not ISO 8601") }
            let ledger = try await options.open()
            let c = ConsentRecord(dataset: dataset, purpose: purpose, legalBasis: legalBasis, scope: scope,
                                  validFrom: from.flatMap(f.date(from:)) ?? Date(), validUntil: until.flatMap(f.date(from:)))
            try await ledger.backend.addConsent(c, actor: actor)
            print("consent \(c.id) recorded: \(dataset) for \(purpose)")
        }
    }

    struct List: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "List a data set's consents and which purposes hold now.")
        @OptionGroup var options: StoreOptions
        @Option var dataset: String

        func execute() async throws {
            let ledger = try await options.open()
            let all = try await ledger.backend.consents(dataset: dataset)
            for c in all {
                let state = c.withdrawnAt != nil ? "withdrawn" : (c.covers(c.purpose, at: Date()) ? "active" : "not in force")
                print("\(c.id)  \(c.purpose)  \(state)  basis: \(c.legalBasis)  scope: \(c.scope)")
            }
            print("purposes in force now: " + consentedPurposes(all, at: Date()).sorted().joined(separator: ", "))
        }
    }

    struct Withdraw: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Withdraw a consent; every later use for its purpose stops at once.")
        @OptionGroup var options: StoreOptions
        @Argument var id: String
        @Option var actor = "admin"

        func execute() async throws {
            let ledger = try await options.open()
            do { try await ledger.backend.withdrawConsent(id: id, at: Date(), actor: actor) } catch let e as LedgerError { throw ValidationError(e.description) }
            print("consent \(id) withdrawn")
        }
    }
}

/// A command whose work is asynchronous. `run()` forwards to `execute()`; the entry point calls
/// `execute()` directly, which no synchronous overload can shadow.
protocol AsyncExecutable {
    func execute() async throws
}

extension AsyncExecutable {
    func run() async throws { try await execute() }
}

/// The program's entry point: parse, then run the chosen command, awaiting it if it is asynchronous.
public func runFedGate() async {
    var command: any ParsableCommand
    do { command = try FedGateCommand.parseAsRoot() } catch {
        // Only what the command line itself got wrong prints the usage.
        FedGateCommand.exit(withError: error)
    }
    do {
        if let asynchronous = command as? any AsyncExecutable {
            try await asynchronous.execute()
        } else {
            try command.run()
        }
    } catch let failure as CommandFailure {
        FileHandle.standardError.write(Data("Error: \(failure.description)\n".utf8))
        exit(failure.status.rawValue)
    } catch let invalid as ValidationError {
        // A file, store or value found unusable while running: one line, no usage text (64, EX_USAGE).
        FileHandle.standardError.write(Data("Error: \(invalid.message)\n".utf8))
        exit(ExitStatus.unusableInput.rawValue)
    } catch {
        FedGateCommand.exit(withError: error)
    }
}
