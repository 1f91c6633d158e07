import Foundation
import Crypto
import FedGateAggregation
import FedGateLearning
import FedGateRounds
import FedGateSecureAggregation
import Synchronization
import Testing

/// A whole round at the broker as a state machine, driven event by event with no network, file,
/// clock or sleep: the broker's part is played by the test (it "records", "sends" and "waits" by
/// handing the machine the event of each action). Every state, every abort with its reason, the
/// quorum and deadline edges, secure rounds with real protocol clients, and recovery after a crash.
@Suite("A round's state machine: events in, actions out")
struct RoundMachineTests {
    typealias Machine = RoundMachine<String>

    static func moments(_ features: Int) -> ReleasedStatistics {
        ReleasedStatistics(count: 10, sums: Array(repeating: 1, count: features), squares: Array(repeating: 2, count: features), classes: 2)
    }

    /// Every state a machine passed through, by case name, across the suite's runs.
    final class Visits: Sendable {
        private let seen = Mutex(Set<String>())
        var names: Set<String> { seen.withLock { $0 } }
        func note(_ m: Machine) {
            let name = String(describing: m.state).prefix { $0 != "(" }.description
            seen.withLock { _ = $0.insert(name) }
        }
    }

    /// A machine for silos a, b, c (quorum two) and the stages it asked to record, in order.
    struct Run {
        var machine: Machine
        var recorded: [RoundStage] = [.planned]
        let visits: Visits

        init(eligible: [String] = ["a", "b", "c"], quorum: Int = 2, needsModel: Bool = false, visits: Visits = Visits()) {
            machine = Machine(number: 3, eligible: eligible, quorum: quorum, datasets: ["heart"], needsModel: needsModel)
            self.visits = visits
            visits.note(machine)
        }

        /// Hands the machine an event and notes the stage a `.record` asks for.
        mutating func handle(_ event: Machine.Event) throws -> Machine.Action {
            let action = try machine.handle(event)
            visits.note(machine)
            if case .record(let stage, _) = action { recorded.append(stage) }
            return action
        }

        mutating func start() throws -> Machine.Action {
            let action = try machine.start()
            visits.note(machine)
            if case .record(let stage, _) = action { recorded.append(stage) }
            return action
        }

        /// Start to the offer being out.
        mutating func offer() throws {
            _ = try start()
            guard case .offer(let to) = try handle(.recorded) else { Issue.record("no offer"); return }
            #expect(to == machine.progress.sampled.sorted())
        }

        /// The offered silos answer (`accepting` yes, the others no) and the offer closes.
        mutating func answer(accepting: [String], features: [String: Int] = [:]) throws -> Machine.Action {
            for silo in machine.progress.sampled.sorted() {
                let yes = accepting.contains(silo)
                try machine.reply(from: silo, accepted: yes, reasons: yes ? [] : ["consent: withdrawn"],
                                  moments: yes ? RoundMachineTests.moments(features[silo] ?? 3) : nil)
            }
            #expect(machine.isWaitOver)
            return try handle(.offerClosed)
        }

        /// From a `.prepare` to the task being out and the machine waiting for updates.
        mutating func train(secure: SecureRoundState<String>? = nil) throws {
            guard case .record(.training, let participants) = try handle(.prepared(secure: secure)) else { Issue.record("no training record"); return }
            #expect(participants == machine.progress.accepted)
            guard case .sendTask(let to) = try handle(.recorded) else { Issue.record("no task"); return }
            #expect(to == participants)
            guard case .wait = try handle(.sent) else { Issue.record("no wait"); return }
        }

        mutating func upload(_ silo: String) throws {
            try machine.upload(ClientUpdate(silo: silo, delta: [Float(silo.count)], examples: 10), metrics: [:])
        }

        /// From the end of training to committed.
        mutating func commit(expecting survivors: [String]) throws {
            guard case .aggregate(let updates) = try handle(.recorded) else { Issue.record("no aggregate"); return }
            #expect(updates.map(\.silo) == survivors)
            guard case .record(.evaluating, let p) = try handle(.aggregated), p == survivors else { Issue.record("no evaluating record"); return }
            guard case .commit(let c) = try handle(.recorded), c == survivors else { Issue.record("no commit"); return }
            guard case .finished(committed: true) = try handle(.committed) else { Issue.record("not finished"); return }
            #expect(machine.state == .committed(survivors))
            #expect(recorded == [.planned, .offered, .training, .aggregating, .evaluating])
        }

        /// An abort with a reason containing `text`, recorded and finished.
        mutating func expectAbort(_ action: Machine.Action, containing text: String) throws {
            guard case .abort(let reason) = action else { Issue.record("expected an abort, got \(action)"); return }
            #expect(reason.contains(text), "\(reason)")
            #expect(machine.state.stage == .aborted)
            guard case .finished(committed: false) = try handle(.aborted) else { Issue.record("not finished"); return }
            #expect(machine.state == .aborted(reason))
            #expect(machine.isFinished)
        }
    }

    static let visits = Visits()

    @Test("a round with every silo goes planned → offered → training → aggregating → evaluating → committed, each recorded before it acts")
    func committed() throws {
        var run = Run(visits: Self.visits)
        try run.offer()
        guard case .prepare(let participants) = try run.answer(accepting: ["a", "b", "c"]) else { Issue.record("no prepare"); return }
        #expect(participants == ["a", "b", "c"])
        try run.train()
        #expect(!run.machine.isWaitOver)
        for silo in ["c", "a", "b"] { try run.upload(silo) }
        #expect(run.machine.isWaitOver)
        guard case .record(.aggregating, let survivors) = try run.handle(.waitEnded) else { Issue.record("no aggregating record"); return }
        #expect(survivors == ["a", "b", "c"])
        try run.commit(expecting: ["a", "b", "c"])
    }

    @Test("too few silos connected for the plan's data sets: the round aborts at once, naming them and the quorum")
    func tooFewEligible() throws {
        var run = Run(eligible: ["a"], visits: Self.visits)
        try run.expectAbort(try run.start(), containing: "only 1 silos connected serve [\"heart\"], quorum is 2")
    }

    @Test("an offer accepted by fewer than the quorum aborts; one accepted by exactly the quorum trains with those who accepted")
    func offerQuorum() throws {
        var below = Run(visits: Self.visits)
        try below.offer()
        try below.expectAbort(try below.answer(accepting: ["b"]), containing: "1 accepted, quorum is 2")
        #expect(below.machine.progress.refused["a"] == ["consent: withdrawn"])

        var exact = Run(visits: Self.visits)
        try exact.offer()
        guard case .prepare(let participants) = try exact.answer(accepting: ["a", "c"]) else { Issue.record("no prepare"); return }
        #expect(participants == ["a", "c"])
    }

    @Test("a silo that accepted and left before the offer closed does not count towards the quorum")
    func leftBeforeTraining() throws {
        var run = Run(visits: Self.visits)
        try run.offer()
        try run.machine.reply(from: "a", accepted: true, reasons: [], moments: Self.moments(3))
        try run.machine.reply(from: "b", accepted: true, reasons: [], moments: Self.moments(3))
        #expect(!run.machine.isWaitOver)
        run.machine.drop("b")
        run.machine.drop("c")
        #expect(run.machine.isWaitOver)
        try run.expectAbort(try run.handle(.offerClosed), containing: "1 accepted, quorum is 2")
    }

    @Test("answers are taken only while the offer is out: before it is recorded and after it closed they are refused")
    func answersOutOfTurn() throws {
        var run = Run(visits: Self.visits)
        #expect(throws: RoundRefusal.offerClosed("a")) { try run.machine.reply(from: "a", accepted: true, reasons: [], moments: nil) }
        try run.offer()
        _ = try run.answer(accepting: ["a", "b", "c"])
        #expect(throws: RoundRefusal.offerClosed("a")) { try run.machine.reply(from: "a", accepted: true, reasons: [], moments: nil) }
    }

    @Test("a plan's first round leaves out a silo whose feature count disagrees, records why, and makes the model from the others' moments")
    func firstRoundAgreement() throws {
        var run = Run(needsModel: true, visits: Self.visits)
        try run.offer()
        guard case .recordDisagreements(let left) = try run.answer(accepting: ["a", "b", "c"], features: ["b": 5]) else {
            Issue.record("no disagreements"); return
        }
        #expect(left.map(\.silo) == ["b"])
        #expect(left.first?.reason.contains("5 feature sums disagree with the 3") == true)
        guard case .makeModel(let moments) = try run.handle(.disagreementsRecorded) else { Issue.record("no model"); return }
        #expect(moments.count == 2 && moments.allSatisfy { $0.sums.count == 3 })
        guard case .prepare(let participants) = try run.handle(.modelMade) else { Issue.record("no prepare"); return }
        #expect(participants == ["a", "c"])
        #expect(run.machine.progress.refused["b"]?.first?.hasPrefix("broker: ") == true)
    }

    @Test("a first round whose agreeing silos fall below the quorum aborts")
    func firstRoundDisagreementAborts() throws {
        var run = Run(needsModel: true, visits: Self.visits)
        try run.offer()
        _ = try run.answer(accepting: ["a", "b", "c"], features: ["b": 5, "c": 4])
        try run.expectAbort(try run.handle(.disagreementsRecorded), containing: "1 accepting silos sent consistent feature moments, quorum is 2")
    }

    @Test("a round whose secure-aggregation setup fails aborts with the reason")
    func setupFails() throws {
        var run = Run(visits: Self.visits)
        try run.offer()
        _ = try run.answer(accepting: ["a", "b"])
        try run.expectAbort(try run.handle(.preparationFailed("too few silos")), containing: "secure aggregation cannot run: too few silos")
    }

    @Test("at the deadline the silos that uploaded are the round's if they reach the quorum; late silos are dropped")
    func deadline() throws {
        var run = Run(visits: Self.visits)
        try run.offer()
        _ = try run.answer(accepting: ["a", "b", "c"])
        try run.train()
        try run.upload("a")
        try run.upload("c")
        #expect(!run.machine.isWaitOver)
        guard case .record(.aggregating, let survivors) = try run.handle(.waitEnded) else { Issue.record("no aggregating"); return }
        #expect(survivors == ["a", "c"])
        #expect(run.machine.progress.dropped == ["b"])
        try run.commit(expecting: ["a", "c"])
    }

    @Test("at the deadline with fewer updates than the quorum the round aborts; a silo that left is not waited for")
    func deadlineBelowQuorum() throws {
        var run = Run(visits: Self.visits)
        try run.offer()
        _ = try run.answer(accepting: ["a", "b", "c"])
        try run.train()
        try run.upload("a")
        run.machine.drop("b")
        #expect(!run.machine.isWaitOver)
        run.machine.drop("c")
        #expect(run.machine.isWaitOver)
        try run.expectAbort(try run.handle(.waitEnded), containing: "1 updates by the deadline, quorum is 2")
    }

    @Test("an update from a silo that did not accept, or a second one, is refused and the round is unchanged")
    func uploadsRefused() throws {
        var run = Run(visits: Self.visits)
        try run.offer()
        _ = try run.answer(accepting: ["a", "b"])
        try run.train()
        #expect(throws: RoundRefusal.notParticipant("c", round: nil)) { try run.upload("c") }
        try run.upload("a")
        #expect(throws: RoundRefusal.alreadyUploaded("a")) { try run.upload("a") }
        #expect(run.machine.survivors == ["a"])
    }

    @Test("an event that does not fit the state is the broker's mistake: refused, and the state is unchanged")
    func outOfOrder() throws {
        var run = Run(visits: Self.visits)
        #expect(throws: Machine.OutOfOrder.self) { _ = try run.machine.handle(.committed) }
        #expect(run.machine.state == .planned)
        try run.offer()
        #expect(throws: Machine.OutOfOrder.self) { _ = try run.machine.start() }
        #expect(throws: Machine.OutOfOrder.self) { _ = try run.machine.handle(.waitEnded) }
        #expect(run.machine.state == .offering)
    }

    @Test("a round stopped from outside aborts with the reason, unless it is already over")
    func stopped() throws {
        var run = Run(visits: Self.visits)
        try run.offer()
        guard let action = run.machine.stop(reason: "the plan was cancelled") else { Issue.record("no abort"); return }
        try run.expectAbort(action, containing: "the plan was cancelled")
        #expect(run.machine.stop(reason: "again") == nil)
    }

    // MARK: Secure rounds

    /// Real protocol clients for the participants (no network).
    struct Clients {
        var clients: [String: SecureAggregationClient] = [:]
        let state: SecureRoundState<String>

        init(_ participants: [String], threshold: Int) throws {
            let configuration = try SecureAggregationConfiguration(round: 7, participants: participants, threshold: threshold, dimension: 2)
            let keys = Dictionary(uniqueKeysWithValues: participants.map { ($0, Curve25519.Signing.PrivateKey()) })
            for silo in participants {
                clients[silo] = try SecureAggregationClient(configuration: configuration, silo: silo, identityKey: keys[silo]!,
                                                            directory: keys.mapValues(\.publicKey))
            }
            state = SecureRoundState(configuration: configuration)
        }
    }

    /// A secure round of a, b, c trained up to its first phase.
    func secureRun(threshold: Int = 2) throws -> (Run, Clients) {
        var run = Run(visits: Self.visits)
        try run.offer()
        _ = try run.answer(accepting: ["a", "b", "c"])
        let clients = try Clients(["a", "b", "c"], threshold: threshold)
        try run.train(secure: clients.state)
        return (run, clients)
    }

    @Test("a secure round runs keys → shares → masked inputs → unmasking, and the unmasked sum is the sum of the silos' inputs")
    func secureCommitted() throws {
        var (run, c) = try secureRun()
        for silo in ["a", "b", "c"] {
            let ad = try c.clients[silo]!.advertiseKeys()
            try run.machine.secureStep { try $0.advertise(ad, binding: "b-\(silo)", bindingSilo: silo, from: silo) }
        }
        #expect(run.machine.isWaitOver)
        guard case .sendKeys(let keys, let bindings) = try run.handle(.waitEnded) else { Issue.record("no keys"); return }
        #expect(bindings == ["b-a", "b-b", "b-c"])
        #expect(try run.handle(.sent).isWait)
        for (silo, ads) in keys {
            let shares = try c.clients[silo]!.shareKeys(ads)
            try run.machine.secureStep { try $0.share(shares, from: silo) }
        }
        guard case .relayShares(let relays) = try run.handle(.waitEnded) else { Issue.record("no relay"); return }
        #expect(try run.handle(.sent).isWait)
        for (i, relay) in relays.enumerated() {
            let input = try c.clients[relay.silo]!.maskedInput(encoded: [UInt32(i + 1), 10], shares: relay.shares, sharedKeys: relay.sharers)
            try run.machine.secureStep { try $0.receiveMasked(input.values, from: relay.silo) }
            try run.upload(relay.silo)
        }
        #expect(run.machine.isWaitOver)
        guard case .checkConsistency(let check, let signers) = try run.handle(.waitEnded) else { Issue.record("no consistency check"); return }
        #expect(signers == ["a", "b", "c"] && check.survivors == ["a", "b", "c"])
        #expect(try run.handle(.sent).isWait)
        for silo in signers {
            try run.machine.secureStep { try $0.sign(ConsistencySignature(round: check.round, silo: silo, signature: Data(silo.utf8)), from: silo) }
        }
        guard case .requestUnmasking(let request, let to) = try run.handle(.waitEnded) else { Issue.record("no unmasking"); return }
        #expect(to == ["a", "b", "c"])
        #expect(try run.handle(.sent).isWait)
        for silo in to {
            let response = try c.clients[silo]!.unmask(request)
            try run.machine.secureStep { try $0.answer(response, from: silo) }
        }
        guard case .decode(let sum, let survivors) = try run.handle(.waitEnded) else { Issue.record("no decode"); return }
        #expect(sum == [6, 30])
        #expect(survivors == ["a", "b", "c"])
        guard case .record(.aggregating, let p) = try run.handle(.decoded), p == ["a", "b", "c"] else { Issue.record("no aggregating"); return }
        try run.commit(expecting: ["a", "b", "c"])
    }

    @Test("a secure round with too few masked inputs at the deadline aborts before unmasking")
    func secureMaskingBelowQuorum() throws {
        var (run, c) = try secureRun()
        for silo in ["a", "b", "c"] {
            let ad = try c.clients[silo]!.advertiseKeys()
            try run.machine.secureStep { try $0.advertise(ad, binding: silo, bindingSilo: silo, from: silo) }
        }
        guard case .sendKeys(let keys, _) = try run.handle(.waitEnded) else { Issue.record("no keys"); return }
        _ = try run.handle(.sent)
        for (silo, ads) in keys {
            let shares = try c.clients[silo]!.shareKeys(ads)
            try run.machine.secureStep { try $0.share(shares, from: silo) }
        }
        guard case .relayShares(let relays) = try run.handle(.waitEnded) else { Issue.record("no relay"); return }
        _ = try run.handle(.sent)
        let first = relays[0]
        let input = try c.clients[first.silo]!.maskedInput(encoded: [1, 1], shares: first.shares, sharedKeys: first.sharers)
        try run.machine.secureStep { try $0.receiveMasked(input.values, from: first.silo) }
        try run.upload(first.silo)
        try run.expectAbort(try run.handle(.waitEnded), containing: "1 masked inputs by the deadline, quorum is 2")
    }

    @Test("a secure round whose silos fall below the threshold while advertising keys aborts with the protocol's reason")
    func secureBelowThreshold() throws {
        var (run, c) = try secureRun(threshold: 3)
        let ad = try c.clients["a"]!.advertiseKeys()
        try run.machine.secureStep { try $0.advertise(ad, binding: "a", bindingSilo: "a", from: "a") }
        run.machine.drop("b")
        run.machine.drop("c")
        #expect(run.machine.isWaitOver)
        try run.expectAbort(try run.handle(.waitEnded), containing: "secure aggregation: ")
    }

    @Test("a secure step in a round without secure aggregation is refused")
    func secureStepWithoutSecureRound() throws {
        var run = Run(visits: Self.visits)
        try run.offer()
        #expect(throws: SecureAggregationError.self) { try run.machine.secureStep { $0.drop("a") } }
    }

    // MARK: Every state

    @Test("the suite's runs pass through every state of the machine")
    func everyState() throws {
        // Run every path again here (the other tests may run in any order, or in parallel).
        let all = RoundMachineTests()
        try all.committed(); try all.tooFewEligible(); try all.offerQuorum(); try all.firstRoundAgreement()
        try all.deadline(); try all.secureCommitted(); try all.setupFails()
        let names = ["planned", "recordingOffer", "offering", "agreeing", "makingModel", "preparing", "recordingTraining", "sendingTask",
                     "training", "relaying", "decoding", "recordingAggregating", "aggregating", "recordingEvaluating", "committing",
                     "aborting", "committed", "aborted"]
        #expect(Set(names).isSubset(of: Self.visits.names), "not visited: \(Set(names).subtracting(Self.visits.names).sorted())")
        #expect(Self.visits.names.isSubset(of: Set(names)), "a state the test does not know: \(Self.visits.names.subtracting(names).sorted())")
        let stages = Set(RoundStage.allCases)
        #expect(stages == [.planned, .offered, .training, .aggregating, .evaluating, .committed, .aborted])
    }

    // MARK: Recovery

    @Test("after a crash, a round left in flight is abandoned with the stage it stopped in, and the run goes on after the last round")
    func recovery() {
        let r = RunRecovery(rounds: [
            .init(number: 1, stage: .committed, survivors: ["a", "b"]),
            .init(number: 2, stage: .aborted, survivors: []),
            .init(number: 3, stage: .committed, survivors: ["b", "c"]),
            .init(number: 4, stage: .aggregating, survivors: ["a", "c"]),
        ])
        #expect(r.abandoned == [.init(number: 4, reason: "the broker stopped while the round was aggregating")])
        #expect(r.nextRound == 5)
        #expect(r.participants == ["a", "b", "c"])
        let fresh = RunRecovery(rounds: [])
        #expect(fresh.nextRound == 1 && fresh.abandoned.isEmpty && fresh.participants.isEmpty)
    }

    @Test("a checkpoint's standardisation reads back as written, and one that cannot be used says why")
    func checkpoint() throws {
        let s = Standardisation(means: [0.5, -1], scales: [2, 0.25])
        let c = StandardisationCheckpoint(s, classes: 3)
        #expect(c.problem == nil)
        #expect(c.standardisation.means == s.means && c.standardisation.scales == s.scales)
        var bad = c
        bad.scales = [1]
        #expect(bad.problem == "has 2 means and 1 scales")
        bad = c
        bad.classes = 0  // 1 is a regression model's
        #expect(bad.problem == "has 0 classes")
    }
}

extension RoundMachine.Action {
    var isWait: Bool { if case .wait = self { true } else { false } }
}
