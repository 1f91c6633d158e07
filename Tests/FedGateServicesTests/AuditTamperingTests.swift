import FedGateServices
import FedGateStore
import Foundation
import Testing
@testable import FedGateConsortiumTesting

/// Findings 8 and 9: someone with write access to a store's database (not to the party's key) edits
/// it directly. `fedgate audit verify` names what was truncated, rewritten (even with the chain
/// recomputed) or edited in the ledger; a head another party kept catches a chain cut back together
/// with its own heads.
@Suite("Tampering with a store's database is named by audit verify")
struct AuditTamperingTests {
    let processes = Processes()

    /// Runs `python3 -c script path` (SQLite edits made outside FedGate); its exit status.
    func edit(_ path: String, _ script: String, _ consortium: Consortium) async throws -> Int32? {
        let run = try Processes.Running(["python3", "-c", "import sqlite3,sys,json,hashlib,struct\nc=sqlite3.connect(sys.argv[1])\n" + script + "\nc.commit()", path],
                                                log: consortium.file("edit-\(UUID().uuidString.prefix(6)).log"), executable: "/usr/bin/env")
        return await run.exit(within: 60)
    }

    func verify(_ path: String, _ consortium: Consortium, _ extra: [String] = []) async throws -> (status: Int32?, output: String) {
        try await processes.fedgate(["audit", "verify", "--store", "sqlite:\(path)", "--migrations", Consortium.migrations.path,
                                     "--ca", consortium.file("ca.pem").path] + extra, consortium, log: "verify-\(UUID().uuidString.prefix(6)).log")
    }

    func copy(_ name: String, _ consortium: Consortium, as copy: String) throws -> String {
        let to = consortium.file(copy).path
        // Close any WAL into the copy: the stores are not open any more.
        try FileManager.default.copyItem(atPath: consortium.file(name).path, toPath: to)
        for suffix in ["-wal", "-shm"] where FileManager.default.fileExists(atPath: consortium.file(name).path + suffix) {
            try FileManager.default.copyItem(atPath: consortium.file(name).path + suffix, toPath: to + suffix)
        }
        return to
    }

    @Test("a broker's and a silo's stores after a plan: intact as left; truncated, rewritten with the chain recomputed, or cut back with their heads, and ledger rows edited, each named by audit verify")
    func tamperedStores() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Processes.fedgate.path), "build the fedgate product first (swift build)")
        let consortium = try Consortium()
        let (broker, port) = try await processes.startBroker(consortium)
        defer { broker.signal(SIGKILL) }
        try #require(port > 0, "\(broker.output)")
        let gateways = try await processes.startGateways(consortium, seed: 31, port: port)
        defer { gateways.forEach { $0.signal(SIGKILL) } }
        await eventually { gateways.allConnected() }
        let (hash, submit) = try processes.submitAlongside(consortium, port: port, rounds: 2, deadline: 60)
        defer { submit.signal(SIGKILL) }
        let store = try SQLiteLedger(path: consortium.file("broker.sqlite").path)
        try #require(await eventually(seconds: 120) { (try? await store.planRuns().first { $0.planHash == hash }?.state) == .finished })
        // Stop everything gracefully: each party signs its head once more on the way out.
        (gateways + [broker]).forEach { $0.signal(SIGTERM) }
        for p in gateways + [broker] { _ = await p.exit(within: 60) }
        let heads = try await store.auditHeads()
        let records = try await store.auditRecords()
        try #require(!heads.isEmpty && heads.map(\.seq).max() == records.last?.seq, "the broker signed its final head: \(heads.map(\.seq)) of \(records.count)")

        let intact = try await verify(consortium.file("broker.sqlite").path, consortium)
        #expect(intact.status == 0 && intact.output.contains("signed heads agree"), "\(intact.output)")
        // The head to anchor outside the database, as `--expected-head` takes it.
        #expect(intact.output.contains("head: \(records.last!.seq):\(records.last!.hash)"), "\(intact.output)")
        // Each side kept the other's heads as they were exchanged during the plan.
        func witnessed(in store: String, signer: String, file: String) async throws -> Int {
            let heads = try await processes.fedgate(["audit", "heads", "--witnessed", "--signer", signer, "--store", "sqlite:\(consortium.file(store).path)",
                                                     "--migrations", Consortium.migrations.path], consortium, log: "heads-\(file).log")
            #expect(heads.status == 0, "\(heads.output)")
            let lines = heads.output.split(separator: "\n").filter { $0.hasPrefix("{") }
            try lines.joined(separator: "\n").write(to: consortium.file(file), atomically: true, encoding: .utf8)
            return lines.count
        }
        #expect(try await witnessed(in: "hospital-0.sqlite", signer: "broker", file: "witness.jsonl") >= 2, "the silo kept the broker's heads")
        #expect(try await witnessed(in: "broker.sqlite", signer: "hospital-0", file: "silo-witness.jsonl") >= 2, "the broker kept the silo's heads")

        // Truncated: the last five records removed.
        let cut = try copy("broker.sqlite", consortium, as: "cut.sqlite")
        #expect(try await edit(cut, "c.execute('DELETE FROM audit_records WHERE seq > (SELECT MAX(seq) - 5 FROM audit_records)')", consortium) == 0)
        let truncated = try await verify(cut, consortium)
        #expect(truncated.status == 2 && truncated.output.contains("were removed"), "\(truncated.output)")

        // Rewritten: a round's record edited and every hash after it recomputed, so the links hold.
        let rewritten = try copy("broker.sqlite", consortium, as: "rewritten.sqlite")
        let recompute = """
        rows=c.execute('SELECT seq, at, actor, action, subject, payload FROM audit_records ORDER BY seq').fetchall()
        prev='0'*64
        for (seq, at, actor, action, subject, payload) in rows:
            if action == 'round.committed' and 'survivors' in payload: payload = payload.replace('hospital-2', 'hospital-9')
            bits=str(struct.unpack('<Q', struct.pack('<d', at))[0])
            h=hashlib.sha256()
            for part in [prev, str(seq), bits, actor, action, subject, payload]: h.update(part.encode()); h.update(b'\\0')
            new=h.hexdigest()
            c.execute('UPDATE audit_records SET payload=?, previous_hash=?, hash=? WHERE seq=?', (payload, prev, new, seq))
            prev=new
        """
        #expect(try await edit(rewritten, recompute, consortium) == 0)
        let forged = try await verify(rewritten, consortium)
        #expect(forged.status == 2 && forged.output.contains("audit chain intact") && forged.output.contains("the chain was rewritten"), "\(forged.output)")

        // Cut back together with its own heads: only another party's copy of a head catches it (here
        // the heads the silo received from the broker during the plan).
        let erased = try copy("broker.sqlite", consortium, as: "erased.sqlite")
        #expect(try await edit(erased, "c.execute('DELETE FROM audit_records WHERE seq > 3'); c.execute('DELETE FROM audit_heads')", consortium) == 0)
        let alone = try await verify(erased, consortium)
        #expect(alone.status == 0, "without a witness the cut chain looks whole: \(alone.output)")
        let witnessed = try await verify(erased, consortium, ["--witness", consortium.file("witness.jsonl").path])
        #expect(witnessed.status == 2 && witnessed.output.contains("were removed"), "\(witnessed.output)")
        let expected = try #require(heads.last)
        let pinned = try await verify(erased, consortium, ["--expected-head", "\(expected.seq):\(expected.hash)"])
        #expect(pinned.status == 2 && pinned.output.contains("were removed"), "\(pinned.output)")

        // Finding 9: a silo's ledger edited directly, three ways; each named.
        let silo = try copy("hospital-0.sqlite", consortium, as: "silo-edited.sqlite")
        let ledgerEdit = """
        ids=[r[0] for r in c.execute("SELECT id FROM ledger_entries WHERE state='committed' ORDER BY id").fetchall()]
        c.execute("UPDATE ledger_entries SET state='released' WHERE id=?", (ids[0],))
        ev=json.loads(c.execute('SELECT event FROM ledger_entries WHERE id=?', (ids[1],)).fetchone()[0])
        def raise_sigma(e):
            if isinstance(e, dict):
                for k in list(e):
                    if k in ('noise_multiplier', 'sigma'): e[k] = e[k] * 10
                    else: raise_sigma(e[k])
            elif isinstance(e, list):
                for x in e: raise_sigma(x)
        raise_sigma(ev)
        c.execute('UPDATE ledger_entries SET event=? WHERE id=?', (json.dumps(ev), ids[1]))
        c.execute('UPDATE datasets SET lifetime_cap = lifetime_cap * 100')
        print(ids[0], ids[1])
        """
        #expect(try await edit(silo, ledgerEdit, consortium) == 0)
        let ledger = try await verify(silo, consortium)
        #expect(ledger.status == 2, "\(ledger.output)")
        #expect(ledger.output.contains("state is released in the ledger, committed as record"), "\(ledger.output)")
        #expect(ledger.output.contains("its DP event differs"), "\(ledger.output)")
        #expect(ledger.output.contains("lifetime_cap is 2000.0 in the ledger, 20.0 as record"), "\(ledger.output)")
        let siloIntact = try await verify(consortium.file("hospital-0.sqlite").path, consortium, ["--witness", consortium.file("silo-witness.jsonl").path])
        #expect(siloIntact.status == 0 && siloIntact.output.contains("ledger agrees with the chain"), "\(siloIntact.output)")
        // The silo's trail cut back with its own heads: the broker's copies of the silo's heads name it.
        let siloErased = try copy("hospital-0.sqlite", consortium, as: "silo-erased.sqlite")
        #expect(try await edit(siloErased, "c.execute('DELETE FROM audit_records WHERE seq > 3'); c.execute('DELETE FROM audit_heads')", consortium) == 0)
        let caught = try await verify(siloErased, consortium, ["--witness", consortium.file("silo-witness.jsonl").path])
        #expect(caught.status == 2 && caught.output.contains("were removed"), "\(caught.output)")
    }
}
