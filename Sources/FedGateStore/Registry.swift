import Crypto
import Foundation

/// A silo or broker of the consortium: where it is (for residency) and which certificate it holds.
public struct Party: Sendable, Equatable {
    public enum Kind: String, Sendable { case silo, broker }
    public let id: String
    public let kind: Kind
    public let region: String
    public let jurisdiction: String
    public let certificateSHA256: String
    public let enrolledAt: Date
    public var revokedAt: Date?

    public init(id: String, kind: Kind, region: String, jurisdiction: String, certificateSHA256: String, enrolledAt: Date, revokedAt: Date? = nil) {
        self.id = id
        self.kind = kind
        self.region = region
        self.jurisdiction = jurisdiction
        self.certificateSHA256 = certificateSHA256
        self.enrolledAt = enrolledAt
        self.revokedAt = revokedAt
    }
}

/// A one-time invitation for a silo to enrol: the token itself is shown once to the operator and
/// stored only as its SHA-256.
public struct EnrolmentInvitation: Sendable, Equatable {
    public let silo: String
    public let region: String
    public let jurisdiction: String
    public let tokenSHA256: String
    public let createdAt: Date
    public let expiresAt: Date
    public var usedAt: Date?

    public init(silo: String, region: String, jurisdiction: String, tokenSHA256: String, createdAt: Date, expiresAt: Date, usedAt: Date? = nil) {
        self.silo = silo
        self.region = region
        self.jurisdiction = jurisdiction
        self.tokenSHA256 = tokenSHA256
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usedAt = usedAt
    }

    /// The party as enrolled by this invitation at `time`: its jurisdiction is the invitation's.
    func party(_ p: Party, at time: Date) -> Party {
        Party(id: p.id, kind: p.kind, region: p.region, jurisdiction: jurisdiction, certificateSHA256: p.certificateSHA256, enrolledAt: time)
    }

    /// Why this invitation cannot enrol `silo` at `time`, or nil if it can.
    public func refusal(for silo: String, region: String?, at time: Date) -> String? {
        if usedAt != nil { return "the enrolment token was already used" }
        if time >= expiresAt { return "the enrolment token expired at \(expiresAt)" }
        if silo != self.silo { return "the enrolment token is for silo '\(self.silo)', not '\(silo)'" }
        if let region, region != self.region { return "the enrolment token is for region '\(self.region)', not '\(region)'" }
        return nil
    }
}

/// One revocation: a whole identity (every certificate carrying the id), or one certificate by
/// its SHA-256 fingerprint or serial number (lower-case hex, no separators).
public struct Revocation: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case identity, sha256, serial }
    public let kind: Kind
    public let value: String
    public let reason: String
    public let revokedAt: Date

    public init(kind: Kind, value: String, reason: String, revokedAt: Date) {
        self.kind = kind
        self.value = kind == .identity ? value : value.lowercased().filter { $0 != ":" }
        self.reason = reason
        self.revokedAt = revokedAt
    }
}

/// Everything revoked: identities (revoked parties among them), fingerprints and serials.
public struct RevocationList: Sendable, Equatable {
    public var identities: Set<String> = []
    public var fingerprints: Set<String> = []
    public var serials: Set<String> = []
    public init(identities: Set<String> = [], fingerprints: Set<String> = [], serials: Set<String> = []) {
        self.identities = identities
        self.fingerprints = fingerprints
        self.serials = serials
    }

    mutating func add(_ kind: Revocation.Kind, _ value: String) {
        switch kind {
        case .identity: identities.insert(value)
        case .sha256: fingerprints.insert(value)
        case .serial: serials.insert(value)
        }
    }
}

/// A round of a plan and where it stands. Every transition is written before its effects.
public struct RoundRecord: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable {
        case planned, offered, training, aggregating, evaluating, committed, aborted

        /// The states a round may move to from this one (any live state may abort).
        public var next: Set<State> {
            switch self {
            case .planned: [.offered, .aborted]
            case .offered: [.training, .aborted]
            case .training: [.aggregating, .aborted]
            case .aggregating: [.evaluating, .aborted]
            case .evaluating: [.committed, .aborted]
            case .committed, .aborted: []
            }
        }
    }

    public let planHash: String
    public let number: Int
    public var state: State
    public var sampled: [String]
    public var survivors: [String]
    public let deadline: Date
    public var updatedAt: Date

    public init(planHash: String, number: Int, state: State, sampled: [String], survivors: [String], deadline: Date, updatedAt: Date) {
        self.planHash = planHash
        self.number = number
        self.state = state
        self.sampled = sampled
        self.survivors = survivors
        self.deadline = deadline
        self.updatedAt = updatedAt
    }
}

/// A model version with its lineage: plan, round, participants, ε spent per silo, metrics, content hash.
public struct ModelVersion: Sendable, Equatable {
    public let version: Int
    public let planHash: String
    public let round: Int
    public let contentSHA256: String
    public let participants: [String]
    public let epsilonPerSilo: [String: Double]
    public let metrics: [String: Double]
    public let parent: Int?
    public let createdAt: Date

    public init(version: Int, planHash: String, round: Int, contentSHA256: String, participants: [String],
                epsilonPerSilo: [String: Double], metrics: [String: Double], parent: Int?, createdAt: Date) {
        self.version = version
        self.planHash = planHash
        self.round = round
        self.contentSHA256 = contentSHA256
        self.participants = participants
        self.epsilonPerSilo = epsilonPerSilo
        self.metrics = metrics
        self.parent = parent
        self.createdAt = createdAt
    }
}

/// The consortium's parties: enrolments, invitations and revocations; every change audited in its
/// transaction.
public protocol PartyRegistry: Sendable {
    func enroll(_ party: Party, actor: String) async throws
    func revoke(party id: String, at: Date, actor: String) async throws
    func party(_ id: String) async throws -> Party?
    /// Records an invitation (audited without the token).
    func invite(_ invitation: EnrolmentInvitation, actor: String) async throws
    func invitation(tokenSHA256: String) async throws -> EnrolmentInvitation?
    /// Uses the invitation and enrols the party in one transaction; refused (nothing changed) if the
    /// token is unknown, used, expired or for another silo or region.
    func redeem(tokenSHA256: String, enrolling party: Party, at: Date) async throws
    /// Records a revocation (a second one of the same certificate or identity changes nothing); an
    /// identity revocation of an enrolled party revokes the party too. Audited in the transaction.
    func revoke(_ revocation: Revocation, actor: String) async throws
    /// Everything revoked, revoked parties included (the broker refuses them at the handshake).
    func revocations() async throws -> RevocationList
}

/// A plan's rounds and their stored states; every move audited in its transaction.
public protocol RoundRecords: Sendable {
    /// Creates a round in `planned`.
    func openRound(_ round: RoundRecord, actor: String) async throws
    /// Moves a round to `state` (only along `State.next`), recording who survived.
    func advanceRound(planHash: String, number: Int, to state: RoundRecord.State, survivors: [String], at: Date, actor: String) async throws
    func rounds(planHash: String) async throws -> [RoundRecord]
}

/// The model registry: versions with their lineage, and their files by content hash.
public protocol ModelRegistry: Sendable {
    /// Adds a version (its number is the next one, returned) with its file, stored once per content
    /// hash (nil: a file already stored, as in a rollback). The file must hash to `contentSHA256`.
    func addModelVersion(_ draft: ModelVersion, content: [UInt8]?, actor: String) async throws -> Int
    func modelVersions() async throws -> [ModelVersion]
    /// A version's file by its content hash.
    func modelContent(sha256: String) async throws -> [UInt8]?
}

/// Parties, rounds and model versions, as a broker keeps them.
public typealias RegistryBackend = PartyRegistry & RoundRecords & ModelRegistry

enum RegistryJSON {
    static func encode(_ value: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }
    static func strings(_ text: String) -> [String] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String] ?? [] }
    static func numbers(_ text: String) -> [String: Double] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Double] ?? [:] }

    static func transition(from current: String?, to next: RoundRecord.State, planHash: String, number: Int) throws {
        guard let current, let state = RoundRecord.State(rawValue: current) else {
            throw LedgerError.storage("no round \(number) of plan \(planHash)")
        }
        guard state.next.contains(next) else {
            throw LedgerError.storage("round \(number) of plan \(planHash) cannot go from \(state.rawValue) to \(next.rawValue)")
        }
    }
}

/// Everything a broker or gateway keeps: ledger, governance and registry, in one backend.
public typealias ConsortiumStore = LedgerBackend & GovernanceBackend & RegistryBackend & PlanRunBackend

/// What a broker keeps: rounds, versions and the audit chain, and the plans it runs.
public typealias BrokerStore = LedgerBackend & RegistryBackend & PlanRunBackend

/// The backend a store URL names: `sqlite:PATH` (embedded) or `postgres://user@host:port/database`.
public func openStore(_ url: String) throws -> any ConsortiumStore {
    if url.hasPrefix("sqlite:") { return try SQLiteLedger(path: String(url.dropFirst("sqlite:".count))) }
    if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") { return try PostgresLedger(url: url) }
    throw LedgerError.storage("'\(url)' is neither sqlite:PATH nor postgres://user@host:port/database")
}

extension ModelRegistry {
    public func addModelVersion(_ draft: ModelVersion, actor: String) async throws -> Int {
        try await addModelVersion(draft, content: nil, actor: actor)
    }
}

enum ModelContent {
    /// Refuses a file whose bytes do not hash to the version's content hash.
    static func check(_ content: [UInt8], _ sha256: String) throws {
        let actual = SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined()
        guard actual == sha256.lowercased() else {
            throw LedgerError.storage("the model file hashes to \(actual.prefix(12))…, not the version's \(sha256.prefix(12))…; nothing stored")
        }
    }
}
