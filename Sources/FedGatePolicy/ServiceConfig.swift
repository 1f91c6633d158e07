import FedGateData
import Foundation
import Yams

/// Paths to a party's TLS material, resolved against the config file's folder.
public struct TLSPaths: Sendable, Equatable {
    public var certificate: URL
    public var key: URL
    public var ca: URL
}

/// `broker.yaml`: where the broker listens, what it presents, where it keeps its state.
public struct BrokerConfig: Sendable, Equatable {
    /// `limits.handshakes_per_second` and `limits.handshake_burst`: new connections one address may open.
    public var handshakesPerSecond = 20.0
    public var handshakeBurst = 200
    /// `pins`: the gateway versions (`fedgate 0.2.0`) and executable hashes this broker serves; empty: any.
    public var gatewayVersions: [String] = []
    public var gatewaySHA256: [String] = []
    public var id: String
    public var host: String
    public var port: Int
    public var tls: TLSPaths
    /// `sqlite:PATH` or `postgres://…`.
    public var store: String
    /// A folder of migrations to apply instead of the ones built into fedgate (nil: those).
    public var migrations: URL?
    public var heartbeatSeconds: Double
    public var silentAfterSeconds: Double
    public var maximumMessageBytes: Int
    public var maximumPayloadBytes: Int
    /// Updates reassembled at once; the broker's memory for a large model is about
    /// (2 + this) × the model's size (the model, the FedAvg accumulator, the updates in flight).
    public var concurrentUploads: Int
    /// The consortium CA folder (ca.pem, ca-key.pem) when this broker renews certificates, and their lifetime.
    public var issuingCA: URL?
    public var certificateDays: Int
    /// The port of the enrolment listener (silos without a certificate, with a one-time token).
    public var enrolmentPort: Int?
    /// This broker's name in the leader lease (default `id@host:port`) and the lease's length.
    /// Brokers sharing a store with different instance names are leader and standby.
    public var instance: String?
    public var leaseSeconds: Double = 10
    /// Where `/metrics` is served (HTTPS, monitor or admin certificates), if anywhere.
    public var metrics: MetricsListen?
    /// `attack_alert_rounds`: a silo flagged as a likely attacker in this many rounds of a plan raises an alert.
    public var attackAlertRounds = 3
    /// `max_concurrent_rounds`: the most rounds in flight across plans; plans wanting more take
    /// turns (round-robin, `RoundSlots`). nil: no limit.
    public var maxConcurrentRounds: Int?

    public static func load(_ url: URL) throws -> BrokerConfig { try parse(try readPolicyFile(url), file: url.path) }

    public static func parse(_ text: String, file: String) throws -> BrokerConfig {
        let r = YAMLReader(file: file)
        let root = try r.root(text)
        try root.only(["id", "listen", "tls", "store", "migrations", "heartbeat_seconds", "silent_after_seconds", "limits", "issuing", "enrolment_port",
                       "high_availability", "metrics", "pins", "attack_alert_rounds", "max_concurrent_rounds"])
        let listen = try r.map(try root.require("listen", "{host, port}"), "listen")
        try listen.only(["host", "port"])
        let folder = URL(fileURLWithPath: file).deletingLastPathComponent()
        var maxMessage = 4, maxPayload = 256, uploads = 2, handshakes = 20.0, burst = 200
        if let l = root.optional("limits") {
            let limits = try r.map(l, "limits")
            try limits.only(["max_message_mb", "max_payload_mb", "concurrent_uploads", "handshakes_per_second", "handshake_burst"])
            handshakes = try limits.optional("handshakes_per_second").map { try r.double($0, "limits.handshakes_per_second", 0.1...100_000, "new connections per second per address, from 0.1") } ?? 20
            burst = try limits.optional("handshake_burst").map { try r.int($0, "limits.handshake_burst", 1...1_000_000, "new connections at once per address, ≥ 1") } ?? 200
            uploads = try limits.optional("concurrent_uploads").map { try r.int($0, "limits.concurrent_uploads", 1...64, "a count from 1 to 64") } ?? 2
            maxMessage = try limits.optional("max_message_mb").map { try r.int($0, "limits.max_message_mb", 1...64, "MiB from 1 to 64") } ?? 4
            maxPayload = try limits.optional("max_payload_mb").map { try r.int($0, "limits.max_payload_mb", 1...4096, "MiB from 1 to 4096") } ?? 256
        }
        var issuingCA: URL?, days = 7
        if let i = root.optional("issuing") {
            let issuing = try r.map(i, "issuing")
            try issuing.only(["ca", "days"])
            issuingCA = resolve(try r.string(try issuing.require("ca", "the CA folder (ca.pem, ca-key.pem)"), "issuing.ca"), folder)
            days = try issuing.optional("days").map { try r.int($0, "issuing.days", 1...90, "days from 1 to 90") } ?? 7
        }
        let enrolmentPort = try root.optional("enrolment_port").map { try r.int($0, "enrolment_port", 0...65_535, "a port from 0 to 65535") }
        if enrolmentPort != nil && issuingCA == nil {
            throw r.error(root.optional("enrolment_port"), "enrolment_port", "needs `issuing` (the broker signs enrolled silos' certificates)")
        }
        var instance: String?, leaseSeconds = 10.0
        if let h = root.optional("high_availability") {
            let ha = try r.map(h, "high_availability")
            try ha.only(["instance", "lease_seconds"])
            instance = try ha.optional("instance").map { try r.string($0, "high_availability.instance") }
            leaseSeconds = try ha.optional("lease_seconds").map { try r.double($0, "high_availability.lease_seconds", 1...600, "seconds from 1 to 600") } ?? 10
        }
        var config = BrokerConfig(
            id: try r.string(try root.require("id", "the broker's id, as in its certificate"), "id"),
            host: try listen.optional("host").map { try r.string($0, "listen.host") } ?? "0.0.0.0",
            port: try r.int(try listen.require("port", "the TCP port"), "listen.port", 0...65_535, "a port from 0 to 65535"),
            tls: try tlsPaths(r, root, folder),
            store: try storeURL(r, root, folder),
            migrations: try root.optional("migrations").map { resolve(try r.string($0, "migrations"), folder) },
            heartbeatSeconds: try root.optional("heartbeat_seconds").map { try r.double($0, "heartbeat_seconds", 0.05...3600, "seconds from 0.05 to 3600") } ?? 2,
            silentAfterSeconds: try root.optional("silent_after_seconds").map { try r.double($0, "silent_after_seconds", 0.1...86_400, "seconds from 0.1 to 86400") } ?? 10,
            maximumMessageBytes: maxMessage << 20, maximumPayloadBytes: maxPayload << 20, concurrentUploads: uploads, issuingCA: issuingCA, certificateDays: days, enrolmentPort: enrolmentPort)
        config.instance = instance
        config.handshakesPerSecond = handshakes
        config.handshakeBurst = burst
        config.leaseSeconds = leaseSeconds
        config.metrics = try MetricsListen.parse(r, root)
        (config.gatewayVersions, config.gatewaySHA256) = try pins(r, root)
        config.maxConcurrentRounds = try root.optional("max_concurrent_rounds").map {
            try r.int($0, "max_concurrent_rounds", 1...10_000, "a number of rounds ≥ 1 in flight at once across plans")
        }
        config.attackAlertRounds = try root.optional("attack_alert_rounds").map {
            try r.int($0, "attack_alert_rounds", 1...1000, "a number of rounds from 1 to 1000 (a silo flagged in that many rounds of a plan raises an alert)")
        } ?? 3
        return config
    }

    /// `pins: { gateway_versions, gateway_sha256 }`.
    private static func pins(_ r: YAMLReader, _ root: YAMLReader.Map) throws -> ([String], [String]) {
        guard let node = root.optional("pins") else { return ([], []) }
        let pins = try r.map(node, "pins")
        try pins.only(["gateway_versions", "gateway_sha256"])
        let versions = try pins.optional("gateway_versions").map { try r.distinctStrings($0, "pins.gateway_versions") } ?? []
        let digests = try pins.optional("gateway_sha256").map { try r.distinctStrings($0, "pins.gateway_sha256") } ?? []
        if let bad = digests.first(where: { $0.count != 64 || !$0.allSatisfy(\.isHexDigit) }) {
            throw r.error(pins.optional("gateway_sha256"), "pins.gateway_sha256", "'\(bad.prefix(80))' is not a SHA-256 in hex (64 digits)")
        }
        return (versions, digests)
    }
}

/// `gateway.yaml`: the silo's broker, its TLS material, store, policy and data.
public struct GatewayConfig: Sendable, Equatable {
    public var silo: String
    public var brokerHost: String
    public var brokerPort: Int
    public var brokerName: String
    /// Further brokers on the same store (a standby takes over when the leader's lease lapses):
    /// the gateway tries them in turn when the one it talks to stops answering.
    public var standbyBrokers: [Endpoint] = []
    /// Seconds a new connection may take to be welcomed (TCP, TLS, the broker's welcome) before the
    /// gateway gives up on that broker and tries the next.
    public var connectTimeoutSeconds: Double = 15
    public struct Endpoint: Sendable, Equatable {
        public let host: String
        public let port: Int
    }
    public var tls: TLSPaths
    public var store: String
    /// A folder of migrations to apply instead of the ones built into fedgate (nil: those).
    public var migrations: URL?
    public var policy: URL
    public var dataset: String
    /// The export: a CSV file, or (`dataset.postgres`) a table or query in the silo's own PostgreSQL.
    public var csv: URL?
    public var postgres: PostgresRows?
    /// The integer label column, for plans without a schema (nil: only plans with a schema can read this export).
    public var label: String?
    public var testFraction: Double
    /// A separate held-out file (same columns); when given, `csv` is all training rows.
    public var testCSV: URL? = nil
    /// How this silo's export maps onto plans' logical columns and values (`dataset.columns`,
    /// `dataset.values`), for plans with a schema.
    public var mapping = SiloMapping()
    public var learningRate: Double
    /// Renew the certificate from the broker when fewer than this many days are left.
    public var renewBeforeDays: Double
    /// Where `/metrics` is served (HTTPS, monitor or admin certificates), if anywhere.
    public var metrics: MetricsListen?
    /// `dataset.fresh_csv`: the rows the silo's own pipeline writes as they arrive, which a deployed
    /// model is monitored on (the policy's `monitoring:`); nil: nothing to monitor on.
    public var freshCSV: URL?
    /// `deployments`: the folder where deployed registry versions are kept (default `deployed/`
    /// beside this file); `fedgate model predict --config` uses the one the silo runs.
    public var deployments: URL

    public static func load(_ url: URL) throws -> GatewayConfig { try parse(try readPolicyFile(url), file: url.path) }

    public static func parse(_ text: String, file: String) throws -> GatewayConfig {
        let r = YAMLReader(file: file)
        let root = try r.root(text)
        try root.only(["silo", "broker", "tls", "store", "migrations", "policy", "dataset", "learning_rate", "renew_before_days", "metrics", "deployments"])
        let broker = try r.map(try root.require("broker", "{host, port, name}"), "broker")
        try broker.only(["host", "port", "name", "standbys", "connect_timeout_seconds"])
        let standbys: [Endpoint] = try broker.optional("standbys").map { node in
            try r.strings(node, "broker.standbys").map { text in
                guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port),
                      colon > text.startIndex else {
                    throw r.error(node, "broker.standbys", "'\(text)' is not host:port (a port from 1 to 65535)")
                }
                return Endpoint(host: String(text[..<colon]), port: port)
            }
        } ?? []
        let data = try r.map(try root.require("dataset", "{name, csv, label, test_fraction, columns, values}"), "dataset")
        try data.only(["name", "csv", "postgres", "label", "test_fraction", "test_csv", "columns", "values", "fresh_csv"])
        guard (data.optional("csv") == nil) != (data.optional("postgres") == nil) else {
            throw r.error(data.node, "dataset", "give exactly one of csv (a file) and postgres (a table or query in the silo's database)")
        }
        if data.optional("test_csv") != nil && data.optional("test_fraction") != nil {
            throw r.error(data.optional("test_csv"), "dataset.test_csv", "give test_csv or test_fraction, not both")
        }
        let folder = URL(fileURLWithPath: file).deletingLastPathComponent()
        var config = GatewayConfig(
            silo: try r.string(try root.require("silo", "the silo's id, as in its certificate"), "silo"),
            brokerHost: try r.string(try broker.require("host", "the broker's host"), "broker.host"),
            brokerPort: try r.int(try broker.require("port", "the broker's port"), "broker.port", 1...65_535, "a port from 1 to 65535"),
            brokerName: try broker.optional("name").map { try r.string($0, "broker.name") } ?? "broker",
            tls: try tlsPaths(r, root, folder),
            store: try storeURL(r, root, folder),
            migrations: try root.optional("migrations").map { resolve(try r.string($0, "migrations"), folder) },
            policy: resolve(try r.string(try root.require("policy", "the silo's policy file"), "policy"), folder),
            dataset: try r.string(try data.require("name", "the logical data set name plans use"), "dataset.name"),
            csv: try data.optional("csv").map { resolve(try r.string($0, "dataset.csv"), folder) },
            label: try data.optional("label").map { try r.string($0, "dataset.label") },
            testFraction: try data.optional("test_fraction").map { try r.double($0, "dataset.test_fraction", 0.05...0.5, "a share from 0.05 to 0.5") } ?? 0.2,
            testCSV: try data.optional("test_csv").map { resolve(try r.string($0, "dataset.test_csv"), folder) },
            learningRate: try root.optional("learning_rate").map { try r.double($0, "learning_rate", 1e-6...100, "a rate from 1e-6 to 100") } ?? 0.5,
            renewBeforeDays: try root.optional("renew_before_days").map { try r.double($0, "renew_before_days", 0...89, "days from 0 to 89") } ?? 2,
            deployments: resolve(try root.optional("deployments").map { try r.string($0, "deployments") } ?? "deployed", folder))
        config.freshCSV = try data.optional("fresh_csv").map { resolve(try r.string($0, "dataset.fresh_csv"), folder) }
        config.standbyBrokers = standbys
        config.connectTimeoutSeconds = try broker.optional("connect_timeout_seconds")
            .map { try r.double($0, "broker.connect_timeout_seconds", 1...300, "seconds from 1 to 300") } ?? 15
        config.metrics = try MetricsListen.parse(r, root)
        config.mapping = try mapping(r, data)
        config.postgres = try data.optional("postgres").map { try PostgresRows.parse(r, $0, folder) }
        if config.postgres != nil, let label = data.optional("label") {
            throw r.error(label, "dataset.label", "goes with csv; rows from postgres serve plans with a schema (its target is the label)")
        }
        if config.postgres != nil, let test = data.optional("test_csv") {
            throw r.error(test, "dataset.test_csv", "goes with csv; with postgres, held-out rows are test_fraction of the rows read")
        }
        return config
    }

    /// `dataset.columns: {logical: local}` and `dataset.values: {logical: {local value: logical value}}`.
    private static func mapping(_ r: YAMLReader, _ data: YAMLReader.Map) throws -> SiloMapping {
        var mapping = SiloMapping()
        if let node = data.optional("columns") {
            for e in try r.map(node, "dataset.columns").entries { mapping.columns[e.key] = try r.string(e.value, "dataset.columns.\(e.key)") }
        }
        if let node = data.optional("values") {
            for e in try r.map(node, "dataset.values").entries {
                var values: [String: String] = [:]
                for v in try r.map(e.value, "dataset.values.\(e.key)").entries {
                    values[v.key] = try r.string(v.value, "dataset.values.\(e.key).\(v.key)")
                }
                mapping.values[e.key] = values
            }
        }
        return mapping
    }
}

private func resolve(_ path: String, _ folder: URL) -> URL {
    path.hasPrefix("/") ? URL(fileURLWithPath: path) : folder.appendingPathComponent(path)
}

private func tlsPaths(_ r: YAMLReader, _ root: YAMLReader.Map, _ folder: URL) throws -> TLSPaths {
    let tls = try r.map(try root.require("tls", "{certificate, key, ca}: PEM files"), "tls")
    try tls.only(["certificate", "key", "ca"])
    return TLSPaths(certificate: resolve(try r.string(try tls.require("certificate", "our certificate (PEM)"), "tls.certificate"), folder),
                    key: resolve(try r.string(try tls.require("key", "our private key (PEM)"), "tls.key"), folder),
                    ca: resolve(try r.string(try tls.require("ca", "the consortium CA certificate (PEM)"), "tls.ca"), folder))
}

private func storeURL(_ r: YAMLReader, _ root: YAMLReader.Map, _ folder: URL) throws -> String {
    let store = try r.string(try root.require("store", "sqlite:PATH or postgres://user@host:port/database"), "store")
    if store.hasPrefix("sqlite:") { return "sqlite:" + resolve(String(store.dropFirst(7)), folder).path }
    guard store.hasPrefix("postgres://") || store.hasPrefix("postgresql://") else {
        throw r.error(root.optional("store"), "store", "must be sqlite:PATH or postgres://user@host:port/database")
    }
    return resolvingFiles(in: store, folder)
}

/// A PostgreSQL URL with its `sslrootcert` and `password_file` resolved against the config's folder.
func resolvingFiles(in url: String, _ folder: URL) -> String {
    guard var u = URLComponents(string: url), let items = u.queryItems, !items.isEmpty else { return url }
    u.queryItems = items.map { item in
        guard ["sslrootcert", "password_file"].contains(item.name), let value = item.value else { return item }
        return URLQueryItem(name: item.name, value: resolve(value, folder).path)
    }
    return u.string ?? url
}

/// `metrics: { host, port }`: the `/metrics` listener of a broker or gateway.
public struct MetricsListen: Sendable, Equatable {
    public var host: String
    public var port: Int

    static func parse(_ r: YAMLReader, _ root: YAMLReader.Map) throws -> MetricsListen? {
        guard let node = root.optional("metrics") else { return nil }
        let m = try r.map(node, "metrics")
        try m.only(["host", "port"])
        return MetricsListen(host: try m.optional("host").map { try r.string($0, "metrics.host") } ?? "127.0.0.1",
                             port: try r.int(try m.require("port", "the TCP port of /metrics"), "metrics.port", 0...65_535, "a port from 0 to 65535"))
    }
}

/// `dataset.postgres`: where a silo's rows are in its own PostgreSQL, read-only.
public struct PostgresRows: Sendable, Equatable {
    /// `postgres://user@host:port/database`, without a password.
    public var url: String
    /// A table name (`schema.table` allowed), or nil when `query` is given.
    public var table: String?
    public var query: String?
    /// A file holding the role's password (mode 0600), if it needs one.
    public var passwordFile: URL?

    public init(url: String, table: String?, query: String?, passwordFile: URL?) {
        (self.url, self.table, self.query, self.passwordFile) = (url, table, query, passwordFile)
    }

    static func parse(_ r: YAMLReader, _ node: Yams.Node, _ folder: URL) throws -> PostgresRows {
        let m = try r.map(node, "dataset.postgres")
        try m.only(["url", "table", "query", "password_file"])
        let url = try r.string(try m.require("url", "postgres://user@host:port/database (the password in password_file)"), "dataset.postgres.url")
        guard let u = URLComponents(string: url), u.scheme == "postgres" || u.scheme == "postgresql", u.host != nil, u.user != nil else {
            throw r.error(m.optional("url"), "dataset.postgres.url", "must be postgres://user@host:port/database")
        }
        guard u.password == nil else {
            throw r.error(m.optional("url"), "dataset.postgres.url", "must not hold a password; put it in a file named by dataset.postgres.password_file")
        }
        guard (m.optional("table") == nil) != (m.optional("query") == nil) else {
            throw r.error(node, "dataset.postgres", "give exactly one of table and query")
        }
        return PostgresRows(url: resolvingFiles(in: url, folder), table: try m.optional("table").map { try r.string($0, "dataset.postgres.table") },
                            query: try m.optional("query").map { try r.string($0, "dataset.postgres.query") },
                            passwordFile: try m.optional("password_file").map { resolve(try r.string($0, "dataset.postgres.password_file"), folder) })
    }
}
