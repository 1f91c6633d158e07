import FedGatePolicy
import Foundation
import Testing

@Suite("Broker and gateway config files")
struct ServiceConfigTests {
    @Test("a gateway config resolves its paths against its own folder and fills defaults")
    func gateway() throws {
        let c = try GatewayConfig.parse("""
            silo: hospital-a
            broker: { host: broker.example, port: 7443 }
            tls: { certificate: silo/cert.pem, key: /secure/key.pem, ca: ca.pem }
            store: sqlite:hospital-a.sqlite
            policy: policies/hospital-a.yaml
            dataset: { name: breast-cancer-2024, csv: data/b.csv, label: malignant }
            """, file: "/etc/fedgate/gateway.yaml")
        #expect(c.brokerName == "broker" && c.brokerPort == 7443)
        #expect(c.tls.certificate.path == "/etc/fedgate/silo/cert.pem" && c.tls.key.path == "/secure/key.pem")
        #expect(c.store == "sqlite:/etc/fedgate/hospital-a.sqlite")
        #expect(c.testFraction == 0.2 && c.renewBeforeDays == 2)
        #expect(c.standbyBrokers.isEmpty && c.connectTimeoutSeconds == 15)
        #expect(c.deployments.path == "/etc/fedgate/deployed" && c.freshCSV == nil)
        let fresh = try GatewayConfig.parse("""
            silo: hospital-a
            broker: { host: broker.example, port: 7443 }
            tls: { certificate: c.pem, key: k.pem, ca: ca.pem }
            store: sqlite:h.sqlite
            policy: p.yaml
            deployments: /var/lib/fedgate/models
            dataset: { name: d, csv: d.csv, label: y, fresh_csv: incoming/this-week.csv }
            """, file: "/etc/fedgate/gateway.yaml")
        #expect(fresh.deployments.path == "/var/lib/fedgate/models" && fresh.freshCSV?.path == "/etc/fedgate/incoming/this-week.csv")
    }

    @Test("a gateway's standby brokers and connect timeout are read; a timeout out of range or a standby that is not host:port is refused with the field")
    func gatewayBrokers() throws {
        func parse(_ broker: String) throws -> GatewayConfig {
            try GatewayConfig.parse("""
                silo: hospital-a
                broker: \(broker)
                tls: { certificate: c.pem, key: k.pem, ca: ca.pem }
                store: sqlite:h.sqlite
                policy: p.yaml
                dataset: { name: d, csv: d.csv, label: y }
                """, file: "gateway.yaml")
        }
        let c = try parse(#"{ host: a, port: 7443, standbys: ["b:7444"], connect_timeout_seconds: 4.5 }"#)
        #expect(c.standbyBrokers.map { "\($0.host):\($0.port)" } == ["b:7444"] && c.connectTimeoutSeconds == 4.5)
        func error(_ broker: String) -> String {
            do { _ = try parse(broker); return "accepted" } catch { return "\(error)" }
        }
        for bad in ["0", "900", "soon"] {
            let text = error("{ host: a, port: 7443, connect_timeout_seconds: \(bad) }")
            #expect(text.hasPrefix("gateway.yaml:2:") && text.contains("broker.connect_timeout_seconds: must be seconds from 1 to 300"), "\(text)")
        }
        let standby = error(#"{ host: a, port: 7443, standbys: ["b"] }"#)
        #expect(standby.contains("broker.standbys") && standby.contains("'b' is not host:port"), "\(standby)")
    }

    @Test("a broker config with limits and an issuing CA")
    func broker() throws {
        let c = try BrokerConfig.parse("""
            id: broker
            listen: { port: 7443 }
            tls: { certificate: cert.pem, key: key.pem, ca: ca.pem }
            store: postgres://fedgate@db:5432/broker
            limits: { max_message_mb: 8, max_payload_mb: 512, concurrent_uploads: 1 }
            issuing: { ca: ca, days: 14 }
            """, file: "/srv/broker.yaml")
        #expect(c.host == "0.0.0.0" && c.port == 7443 && c.maximumMessageBytes == 8 << 20 && c.maximumPayloadBytes == 512 << 20)
        #expect(c.concurrentUploads == 1)
        #expect(c.issuingCA?.path == "/srv/ca" && c.certificateDays == 14)
        #expect(c.store == "postgres://fedgate@db:5432/broker")
    }

    @Test("mistakes are refused with the file, line and field: unknown fields, missing TLS, a bad store, a bad port")
    func refusals() {
        func error(_ text: String) -> String {
            do { _ = try BrokerConfig.parse(text, file: "broker.yaml"); return "accepted" } catch { return "\(error)" }
        }
        let base = "id: broker\nlisten: { port: 7443 }\ntls: { certificate: c, key: k, ca: a }\nstore: sqlite:b.sqlite\n"
        #expect(error(base + "heartbeat: 2\n").hasPrefix("broker.yaml:5:1: heartbeat: is not a known field"))
        #expect(error("id: broker\nlisten: { port: 7443 }\nstore: sqlite:b.sqlite\n").contains("tls: is required"))
        #expect(error(base.replacingOccurrences(of: "sqlite:b.sqlite", with: "mysql://x")).contains("store: must be sqlite:PATH or postgres://"))
        #expect(error(base.replacingOccurrences(of: "7443", with: "70000")).contains("listen.port: must be a port from 0 to 65535"))
        #expect(error(base + "issuing: { ca: ca, days: 365 }\n").contains("issuing.days: must be days from 1 to 90"))
        #expect(error(base + "limits: { concurrent_uploads: 0 }\n").contains("limits.concurrent_uploads: must be a count from 1 to 64"))
    }
}

/// A gateway's data set from a CSV export or the silo's own PostgreSQL, and the mapping of its
/// names and values onto plans' schemas.
@Suite("A gateway's data source and mapping")
struct DataSourceConfigTests {
    func parse(_ dataset: String) throws -> GatewayConfig {
        try GatewayConfig.parse("""
            silo: dream
            broker: { host: a, port: 7443 }
            tls: { certificate: c.pem, key: k.pem, ca: ca.pem }
            store: sqlite:h.sqlite
            policy: p.yaml
            dataset: \(dataset)
            """, file: "/etc/fedgate/gateway.yaml")
    }

    func error(_ dataset: String) -> String {
        do { _ = try parse(dataset); return "accepted" } catch { return "\(error)" }
    }

    @Test("a PostgreSQL table or query with a password file, and the mapping of names and values")
    func postgresAndMapping() throws {
        let c = try parse("""
            { name: penguins, postgres: { url: "postgres://reader@db.internal:5432/research", table: field.penguins, password_file: secrets/db },
              columns: { sex: Sex }, values: { species: { "Adelie Penguin (Pygoscelis adeliae)": Adelie } } }
            """)
        #expect(c.csv == nil && c.label == nil)
        #expect(c.postgres == PostgresRows(url: "postgres://reader@db.internal:5432/research", table: "field.penguins", query: nil,
                                           passwordFile: URL(fileURLWithPath: "/etc/fedgate/secrets/db")))
        #expect(c.mapping.columns == ["sex": "Sex"] && c.mapping.values["species"]?["Adelie Penguin (Pygoscelis adeliae)"] == "Adelie")
    }

    @Test("a password in the URL, both sources or neither, table and query together, and a label with postgres are refused with the field", arguments: [
        (#"{ name: p, postgres: { url: "postgres://reader:secret@db/research", table: t } }"#, "dataset.postgres.url"),
        (#"{ name: p, csv: p.csv, postgres: { url: "postgres://reader@db/research", table: t } }"#, "exactly one of csv"),
        ("{ name: p }", "exactly one of csv"),
        (#"{ name: p, postgres: { url: "postgres://reader@db/research", table: t, query: "SELECT 1" } }"#, "exactly one of table and query"),
        (#"{ name: p, label: y, postgres: { url: "postgres://reader@db/research", table: t } }"#, "dataset.label"),
    ])
    func refusals(_ dataset: String, _ field: String) {
        let message = error(dataset)
        #expect(message.contains(field), "\(message)")
        #expect(!message.contains("secret"), "a password never reaches a message")
    }
}

@Suite("Software pins in a broker's config and a silo's policy")
struct SoftwarePinConfigTests {
    static let digest = String(repeating: "0a", count: 32)

    @Test("the broker's pins and the policy's are read; a hash that is not 64 hex digits is refused with the field")
    func pins() throws {
        let broker = try BrokerConfig.parse("""
            id: broker
            listen: { host: 127.0.0.1, port: 7443 }
            tls: { certificate: c.pem, key: k.pem, ca: ca.pem }
            store: sqlite:b.sqlite
            pins: { gateway_versions: [fedgate 0.2.0], gateway_sha256: [\(Self.digest)] }
            """, file: "broker.yaml")
        #expect(broker.gatewayVersions == ["fedgate 0.2.0"] && broker.gatewaySHA256 == [Self.digest])
        #expect(broker.attackAlertRounds == 3, "the default alert threshold")
        let base = "id: broker\nlisten: { port: 7443 }\ntls: { certificate: c.pem, key: k.pem, ca: ca.pem }\nstore: sqlite:b.sqlite\n"
        #expect(try BrokerConfig.parse(base + "attack_alert_rounds: 5\n", file: "broker.yaml").attackAlertRounds == 5)
        #expect { try BrokerConfig.parse(base + "attack_alert_rounds: 0\n", file: "broker.yaml") } throws: { "\($0)".contains("attack_alert_rounds") }
        let capped = try BrokerConfig.parse(base + "max_concurrent_rounds: 2\n", file: "broker.yaml")
        #expect(broker.maxConcurrentRounds == nil && capped.maxConcurrentRounds == 2)
        #expect { try BrokerConfig.parse(base + "max_concurrent_rounds: 0\n", file: "broker.yaml") } throws: { "\($0)".contains("max_concurrent_rounds") }
        let policy = try SiloPolicy.parse(Files.hospitalText + "\nsoftware: { broker_versions: [fedgate 0.2.0] }\n", file: "p.yaml")
        #expect(policy.brokerVersions == ["fedgate 0.2.0"] && policy.brokerSHA256.isEmpty)
        #expect { try SiloPolicy.parse(Files.hospitalText + "\nsoftware: { broker_sha256: [abc] }\n", file: "p.yaml") } throws: {
            "\($0)".contains("software.broker_sha256")
        }
    }

    @Test("a policy's least secure-aggregation threshold and survivors are read; 1 is refused with the field")
    func secureMinimums() throws {
        let text = Files.hospitalText.replacingOccurrences(of: "  min_silos_per_round: 3", with: "  min_silos_per_round: 3\n  min_secagg_threshold: 3\n  min_secagg_survivors: 3")
        #expect(text != Files.hospitalText)
        let policy = try SiloPolicy.parse(text, file: "p.yaml")
        #expect(policy.minSecureThreshold == 3 && policy.minSecureSurvivors == 3)
        #expect { try SiloPolicy.parse(text.replacingOccurrences(of: "min_secagg_survivors: 3", with: "min_secagg_survivors: 1"), file: "p.yaml") } throws: {
            "\($0)".contains("privacy.min_secagg_survivors")
        }
    }
}
