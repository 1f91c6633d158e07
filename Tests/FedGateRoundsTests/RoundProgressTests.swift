import FedGateAggregation
import FedGateLearning
import FedGateRounds
import Testing

/// A round at the broker as a value, driven event by event with no network, file, clock or sleep:
/// every transition of `RoundProgress`, every refusal, and the quorum and deadline edges.
@Suite("A round's progress: offer, answers, uploads, drops and the quorum")
struct RoundProgressTests {
    static func moments(_ features: Int, classes: Int = 2) -> ReleasedStatistics {
        ReleasedStatistics(count: 10, sums: Array(repeating: 1, count: features), squares: Array(repeating: 2, count: features), classes: classes)
    }

    static func update(_ silo: String, examples: Int = 10) -> ClientUpdate { ClientUpdate(silo: silo, delta: [1, 2], examples: examples) }

    /// Three silos offered, quorum two.
    func offered() -> RoundProgress { RoundProgress(sampled: ["a", "b", "c"], quorum: 2) }

    func training(_ accepting: [String] = ["a", "b", "c"]) throws -> RoundProgress {
        var p = offered()
        for silo in ["a", "b", "c"] {
            try p.reply(from: silo, accepted: accepting.contains(silo), reasons: ["no"], moments: Self.moments(3))
        }
        let trains = p.closeOffer()
        #expect(trains)
        return p
    }

    @Test("a round starts offering; each offered silo answers once while it is offered, and only they answer")
    func answers() throws {
        var p = offered()
        #expect(p.phase == .offering && !p.everyoneAnswered && !p.isWaitOver)
        try p.reply(from: "a", accepted: true, reasons: [], moments: Self.moments(3))
        #expect(p.accepted == ["a"] && p.moments["a"] == Self.moments(3))
        #expect(throws: RoundRefusal.alreadyAnswered("a")) { try p.reply(from: "a", accepted: false, reasons: [], moments: nil) }
        #expect(throws: RoundRefusal.notOffered("z")) { try p.reply(from: "z", accepted: true, reasons: [], moments: nil) }
        try p.reply(from: "b", accepted: false, reasons: [], moments: Self.moments(3))
        #expect(p.refused["b"] == ["refused without a reason"] && p.moments["b"] == nil, "a refusal's moments are not kept")
        try p.reply(from: "c", accepted: false, reasons: ["purpose: not allowed"], moments: nil)
        #expect(p.refused["c"] == ["purpose: not allowed"])
        #expect(p.everyoneAnswered && p.isWaitOver)
        let trains = p.closeOffer()
        #expect(!trains, "one acceptance is below the quorum of two")
        #expect(p.phase == .closed)
        #expect(throws: RoundRefusal.offerClosed("c")) { try p.reply(from: "c", accepted: true, reasons: [], moments: nil) }
    }

    @Test("a silo that leaves while the offer is open counts as answered and is not a participant")
    func dropWhileOffered() throws {
        var p = offered()
        try p.reply(from: "a", accepted: true, reasons: [], moments: Self.moments(3))
        try p.reply(from: "b", accepted: true, reasons: [], moments: Self.moments(3))
        p.drop("b")
        p.drop("z")
        #expect(p.dropped == ["b"])
        #expect(!p.everyoneAnswered)
        p.drop("c")
        #expect(p.everyoneAnswered)
        let trains = p.closeOffer()
        #expect(!trains, "a and the gone b: one live acceptance, quorum two")
    }

    @Test("the offer closes on the quorum exactly; closing again keeps training")
    func quorumEdge() throws {
        let p = try training(["a", "b"])
        #expect(p.phase == .training && p.accepted == ["a", "b"] && p.refused["c"] == ["no"])
        var again = p
        let stillTrains = again.closeOffer()
        #expect(stillTrains, "closing a training round again says it trains")
        #expect(p.isParticipant("a") && !p.isParticipant("c"))
    }

    @Test("only participants upload, once each, while the round trains")
    func uploads() throws {
        var early = offered()
        #expect(throws: RoundRefusal.outOfPhase("a", phase: "offering")) { try early.upload(Self.update("a"), metrics: [:]) }
        var p = try training(["a", "b"])
        #expect(throws: RoundRefusal.notParticipant("c", round: nil)) { try p.upload(Self.update("c"), metrics: [:]) }
        try p.upload(Self.update("a"), metrics: ["accuracy": 0.5, "eval_examples": 10])
        #expect(p.hasUploaded("a") && !p.everyoneUploaded && !p.isWaitOver)
        #expect(throws: RoundRefusal.alreadyUploaded("a")) { try p.upload(Self.update("a"), metrics: [:]) }
        p.drop("b")
        #expect(throws: RoundRefusal.notParticipant("b", round: nil)) { try p.upload(Self.update("b"), metrics: [:]) }
        #expect(p.everyoneUploaded && p.isWaitOver)
    }

    @Test("a silo that leaves after uploading keeps its update; one that leaves before is not waited for")
    func dropAfterUpload() throws {
        var p = try training()
        try p.upload(Self.update("a"), metrics: [:])
        p.drop("a")
        #expect(!p.dropped.contains("a") && p.updates["a"] != nil)
        p.drop("b")
        try p.upload(Self.update("c"), metrics: [:])
        #expect(p.everyoneUploaded)
        let closed = p.closeTraining()
        #expect(closed?.map(\.silo) == ["a", "c"])
    }

    @Test("at the deadline the silos that did not upload are dropped; the updates come in silo order if the quorum holds, else none")
    func deadline() throws {
        var held = try training()
        try held.upload(Self.update("c"), metrics: [:])
        try held.upload(Self.update("a"), metrics: [:])
        let closed = held.closeTraining()
        #expect(closed?.map(\.silo) == ["a", "c"])
        #expect(held.dropped == ["b"] && held.phase == .closed)
        let again = held.closeTraining()
        #expect(again == nil, "a closed round closes once")
        held.drop("a")
        #expect(!held.dropped.contains("a"), "nothing changes once closed")

        var short = try training()
        try short.upload(Self.update("b"), metrics: [:])
        let none = short.closeTraining()
        #expect(none == nil)
        #expect(short.dropped == ["a", "c"] && short.phase == .closed)
        #expect(throws: RoundRefusal.outOfPhase("a", phase: "closed")) { try short.upload(Self.update("a"), metrics: [:]) }
    }

    @Test("the broker refuses an accepted silo after the offer (its moments disagree): it leaves the participants with the reason, once it has not uploaded")
    func brokerRefusal() throws {
        var offering = offered()
        try offering.reply(from: "a", accepted: true, reasons: [], moments: Self.moments(3))
        offering.refuse("a", reason: "x")
        #expect(offering.accepted == ["a"], "no refusal while offering")
        var p = try training()
        try p.upload(Self.update("a"), metrics: [:])
        p.refuse("a", reason: "too late")
        #expect(p.accepted.contains("a"), "an uploaded silo stays")
        p.refuse("b", reason: "its 4 feature sums disagree")
        #expect(!p.accepted.contains("b") && p.refused["b"] == ["broker: its 4 feature sums disagree"] && !p.isParticipant("b"))
    }

    @Test("the feature count most accepting silos agree on wins; a silo without moments or with another count is named with the reason; a tie goes to the smaller count")
    func featureAgreement() throws {
        var p = RoundProgress(sampled: ["a", "b", "c", "d"], quorum: 2)
        try p.reply(from: "a", accepted: true, reasons: [], moments: Self.moments(3))
        try p.reply(from: "b", accepted: true, reasons: [], moments: Self.moments(3))
        try p.reply(from: "c", accepted: true, reasons: [], moments: Self.moments(5))
        try p.reply(from: "d", accepted: true, reasons: [], moments: nil)
        let trains = p.closeOffer()
        #expect(trains)
        let disagreeing = p.featureDisagreements()
        #expect(disagreeing.map(\.silo).sorted() == ["c", "d"])
        #expect(disagreeing.first { $0.silo == "c" }?.reason == "its 5 feature sums disagree with the 3 of the other silos")
        #expect(disagreeing.first { $0.silo == "d" }?.reason == "it accepted without feature moments")
        for (silo, reason) in disagreeing { p.refuse(silo, reason: reason) }
        #expect(p.acceptedMoments == [Self.moments(3), Self.moments(3)])

        var tie = RoundProgress(sampled: ["a", "b"], quorum: 1)
        try tie.reply(from: "a", accepted: true, reasons: [], moments: Self.moments(4))
        try tie.reply(from: "b", accepted: true, reasons: [], moments: Self.moments(2))
        let tieTrains = tie.closeOffer()
        #expect(tieTrains)
        #expect(tie.featureDisagreements().map(\.silo) == ["a"])
    }

    @Test("the reported accuracy is the uploads' accuracy weighted by their held-out rows; none without both figures")
    func reportedAccuracy() throws {
        var p = try training()
        #expect(p.reportedAccuracy == nil)
        try p.upload(Self.update("a"), metrics: ["accuracy": 0.5, "eval_examples": 10])
        try p.upload(Self.update("b"), metrics: ["accuracy": 1.0, "eval_examples": 30])
        try p.upload(Self.update("c"), metrics: ["accuracy": 0.0])
        #expect(p.reportedAccuracy == (0.5 * 10 + 1.0 * 30) / 40)
    }

    @Test("property: for random answers, drops and uploads in any order, a round never commits below quorum, never counts a silo twice, and only participants' updates count")
    func randomRounds() throws {
        var rng = SplitMix(seed: 7)
        for _ in 0..<2000 {
            let n = Int.random(in: 1...6, using: &rng)
            let silos = (0..<n).map { "s\($0)" }
            let quorum = Int.random(in: 1...n, using: &rng)
            var p = RoundProgress(sampled: Set(silos), quorum: quorum)
            for _ in 0..<Int.random(in: 0...20, using: &rng) {
                let silo = silos.randomElement(using: &rng)!
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: try? p.reply(from: silo, accepted: Bool.random(using: &rng), reasons: [], moments: Self.moments(2))
                case 1: p.drop(silo)
                case 2: try? p.upload(Self.update(silo), metrics: [:])
                default: if Bool.random(using: &rng) { _ = p.closeOffer() }
                }
            }
            #expect(Set(p.accepted).isDisjoint(with: p.refused.keys))
            #expect(Set(p.updates.keys).isSubset(of: p.accepted))
            #expect(Set(p.accepted).count == p.accepted.count)
            let training = p.phase == .training
            if let closed = p.closeTraining() {
                #expect(training && closed.count >= quorum && Set(closed.map(\.silo)).count == closed.count)
                #expect(closed.allSatisfy { !p.dropped.contains($0.silo) })
            }
            #expect(p.phase == .closed || p.phase == .offering)
        }
    }
}

/// A small deterministic generator for the property tests.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
