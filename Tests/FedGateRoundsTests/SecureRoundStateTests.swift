import Foundation
import Crypto
import FedGateRounds
import FedGateSecureAggregation
import Testing

/// The broker's side of a secure-aggregation round as a value, driven by real protocol clients in
/// memory (no network, no clock): the phases in order, the steps each phase takes, who is waited
/// for, drop-outs at each phase, and impersonation, replay and out-of-order steps refused.
@Suite("A secure round's phases at the broker")
struct SecureRoundStateTests {
    /// A round of `n` silos with their clients and encoded updates (silo i sends i+1 in every coordinate).
    struct Fixture {
        let configuration: SecureAggregationConfiguration
        var clients: [String: SecureAggregationClient]
        var state: SecureRoundState<String>
        let encoded: [String: [UInt32]]

        init(n: Int, threshold: Int, dimension: Int = 4) throws {
            let silos = (0..<n).map { "silo-\($0)" }
            let configuration = try SecureAggregationConfiguration(round: 42, participants: silos, threshold: threshold, dimension: dimension)
            let keys = Dictionary(uniqueKeysWithValues: silos.map { ($0, Curve25519.Signing.PrivateKey()) })
            let directory = keys.mapValues(\.publicKey)
            self.configuration = configuration
            clients = try Dictionary(uniqueKeysWithValues: silos.map {
                ($0, try SecureAggregationClient(configuration: configuration, silo: $0, identityKey: keys[$0]!, directory: directory))
            })
            state = SecureRoundState(configuration: configuration)
            encoded = Dictionary(uniqueKeysWithValues: silos.enumerated().map { ($1, Array(repeating: UInt32($0 + 1), count: dimension)) })
        }

        var silos: [String] { configuration.participants }

        /// Runs the round with `dropped` silos leaving before the phase given; the unmasked sum and survivors.
        mutating func run(dropping dropped: [String: SecureRoundState<String>.Phase] = [:]) throws -> (sum: [UInt32], survivors: [String]) {
            func live(_ s: String, _ phase: SecureRoundState<String>.Phase) -> Bool {
                guard let at = dropped[s] else { return true }
                return SecureRoundState<String>.Phase.allCases.firstIndex(of: at)! > SecureRoundState<String>.Phase.allCases.firstIndex(of: phase)!
            }
            func leave(_ phase: SecureRoundState<String>.Phase) { for (s, at) in dropped where at == phase { state.drop(s) } }
            leave(.advertising)
            for s in silos where live(s, .advertising) {
                let ad = try clients[s]!.advertiseKeys()
                try state.advertise(ad, binding: "binding of \(s)", bindingSilo: s, from: s)
            }
            #expect(state.isPhaseComplete(everyoneUploaded: false))
            let keys = try state.closeAdvertising()
            #expect(state.phase == .sharing)
            leave(.sharing)
            for (s, ads) in keys.keys where live(s, .sharing) {
                try state.share(try clients[s]!.shareKeys(ads), from: s)
            }
            #expect(state.isPhaseComplete(everyoneUploaded: false))
            let relays = try state.closeSharing()
            leave(.masking)
            for relay in relays where live(relay.silo, .masking) {
                let input = try clients[relay.silo]!.maskedInput(encoded: encoded[relay.silo]!, shares: relay.shares, sharedKeys: relay.sharers)
                try state.receiveMasked(input.values, from: relay.silo)
            }
            let consistency = try state.closeMasking()
            #expect(state.phase == .consistency)
            leave(.consistency)
            for s in consistency.to where live(s, .consistency) {
                try state.sign(ConsistencySignature(round: consistency.check.round, silo: s, signature: Data(s.utf8)), from: s)
            }
            let unmasking = try state.closeConsistency()
            #expect(unmasking.request.signatures?.count == consistency.to.filter { live($0, .consistency) }.count)
            leave(.unmasking)
            for s in unmasking.to where live(s, .unmasking) {
                try state.answer(try clients[s]!.unmask(unmasking.request), from: s)
            }
            #expect(state.isPhaseComplete(everyoneUploaded: true))
            return try state.unmask()
        }
    }

    @Test("with every silo present the phases run in order and the unmasked sum is the plain sum")
    func complete() throws {
        var f = try Fixture(n: 4, threshold: 3)
        #expect(f.state.phase == .advertising && !f.state.isPhaseComplete(everyoneUploaded: false))
        let (sum, survivors) = try f.run()
        #expect(survivors == f.silos)
        #expect(sum == [10, 10, 10, 10])
    }

    @Test("a silo that leaves at any phase is not waited for; the survivors' sum is unmasked while the threshold holds")
    func dropouts() throws {
        for phase in SecureRoundState<String>.Phase.allCases {
            var f = try Fixture(n: 4, threshold: 3)
            let (sum, survivors) = try f.run(dropping: ["silo-1": phase])
            // Leaving at the consistency check or at unmasking, after its masked input was folded, still counts it.
            let folded = phase == .consistency || phase == .unmasking
            let counted = folded ? 1 + 2 + 3 + 4 : 1 + 3 + 4
            #expect(sum == Array(repeating: UInt32(counted), count: 4), "left at \(phase)")
            #expect(survivors.contains("silo-1") == folded)
        }
    }

    @Test("below the threshold at any phase the round cannot go on: the phase's close says so")
    func belowThreshold() throws {
        for phase in SecureRoundState<String>.Phase.allCases {
            var f = try Fixture(n: 3, threshold: 3)
            #expect(throws: SecureAggregationError.self, "two of three left at \(phase)") {
                _ = try f.run(dropping: ["silo-0": phase, "silo-2": phase])
            }
        }
    }

    @Test("a step out of its phase, from another silo's name, twice, or from a silo gone is refused and changes nothing")
    func refusedSteps() throws {
        var f = try Fixture(n: 3, threshold: 2)
        let ad0 = try f.clients["silo-0"]!.advertiseKeys()
        #expect(throws: SecureAggregationError.self) { try f.state.advertise(ad0, binding: "b", bindingSilo: "silo-0", from: "silo-1") }
        #expect(throws: SecureAggregationError.self) { try f.state.advertise(ad0, binding: "b", bindingSilo: "silo-1", from: "silo-0") }
        #expect(f.state.bindings.isEmpty)
        try f.state.advertise(ad0, binding: "b", bindingSilo: "silo-0", from: "silo-0")
        #expect(throws: SecureAggregationError.self) { try f.state.advertise(ad0, binding: "b", bindingSilo: "silo-0", from: "silo-0") }
        #expect(throws: SecureAggregationError.self) { try f.state.share([], from: "silo-0") }
        #expect(throws: SecureAggregationError.self) { try f.state.receiveMasked([0, 0, 0, 0], from: "silo-0") }
        #expect(throws: SecureAggregationError.self) { _ = try f.state.closeSharing() }
        f.state.drop("silo-2")
        let ad2 = try f.clients["silo-2"]!.advertiseKeys()
        #expect(throws: SecureAggregationError.self) { try f.state.advertise(ad2, binding: "b", bindingSilo: "silo-2", from: "silo-2") }
        #expect(!f.state.isPhaseComplete(everyoneUploaded: false), "silo-1 has not advertised")
        try f.state.advertise(try f.clients["silo-1"]!.advertiseKeys(), binding: "c", bindingSilo: "silo-1", from: "silo-1")
        #expect(f.state.isPhaseComplete(everyoneUploaded: false))
        let keys = try f.state.closeAdvertising()
        #expect(keys.keys.map(\.silo) == ["silo-0", "silo-1"] && keys.bindings == ["b", "c"])
        let shares = try f.clients["silo-0"]!.shareKeys(keys.keys[0].advertisements)
        #expect(throws: SecureAggregationError.self, "shares sent in another silo's name") { try f.state.share(shares, from: "silo-1") }
        try f.state.share(shares, from: "silo-0")
        #expect(!f.state.isPhaseComplete(everyoneUploaded: false))
    }

    @Test("an unmasking answer in another's name, from a silo not asked, or a second one is refused")
    func unmaskingAnswers() throws {
        var f = try Fixture(n: 3, threshold: 2)
        for s in f.silos { try f.state.advertise(try f.clients[s]!.advertiseKeys(), binding: s, bindingSilo: s, from: s) }
        for (s, ads) in try f.state.closeAdvertising().keys { try f.state.share(try f.clients[s]!.shareKeys(ads), from: s) }
        for relay in try f.state.closeSharing() where relay.silo != "silo-2" {
            let input = try f.clients[relay.silo]!.maskedInput(encoded: f.encoded[relay.silo]!, shares: relay.shares, sharedKeys: relay.sharers)
            try f.state.receiveMasked(input.values, from: relay.silo)
        }
        let consistency = try f.state.closeMasking()
        #expect(consistency.check.survivors == ["silo-0", "silo-1"] && consistency.to == ["silo-0", "silo-1"])
        let signature = ConsistencySignature(round: consistency.check.round, silo: "silo-0", signature: Data([1]))
        #expect(throws: SecureAggregationError.self, "a signature in another's name") { try f.state.sign(signature, from: "silo-1") }
        #expect(throws: SecureAggregationError.self, "silo-2 is no survivor") {
            try f.state.sign(ConsistencySignature(round: consistency.check.round, silo: "silo-2", signature: Data([1])), from: "silo-2")
        }
        try f.state.sign(signature, from: "silo-0")
        #expect(throws: SecureAggregationError.self, "signed twice") { try f.state.sign(signature, from: "silo-0") }
        try f.state.sign(ConsistencySignature(round: consistency.check.round, silo: "silo-1", signature: Data([2])), from: "silo-1")
        let unmasking = try f.state.closeConsistency()
        #expect(unmasking.request.survivors == ["silo-0", "silo-1"] && unmasking.request.signatures == ["silo-0": Data([1]), "silo-1": Data([2])])
        let answer = try f.clients["silo-0"]!.unmask(unmasking.request)
        #expect(throws: SecureAggregationError.self) { try f.state.answer(answer, from: "silo-1") }
        #expect(throws: (any Error).self, "silo-2 sent no masked input and is not asked") {
            try f.state.answer(try f.clients["silo-2"]!.unmask(unmasking.request), from: "silo-2")
        }
        try f.state.answer(answer, from: "silo-0")
        #expect(throws: SecureAggregationError.self) { try f.state.answer(answer, from: "silo-0") }
        try f.state.answer(try f.clients["silo-1"]!.unmask(unmasking.request), from: "silo-1")
        let (sum, survivors) = try f.state.unmask()
        #expect(survivors == ["silo-0", "silo-1"] && sum == [3, 3, 3, 3])
    }
}

@Suite("A plan's final evaluation and the figures it accepts")
struct FinalEvaluationTests {
    @Test("only the silos asked report, once each, for the round asked; the evaluation is complete when all have")
    func reports() {
        var e = FinalEvaluation<Double>(round: 5, expected: ["a", "b"])
        #expect(!e.isComplete)
        let stranger = e.receive(0.9, from: "z", round: 5)
        let otherRound = e.receive(0.9, from: "a", round: 4)
        let first = e.receive(0.9, from: "a", round: 5)
        let second = e.receive(0.1, from: "a", round: 5)
        #expect(!stranger && !otherRound && first && !second)
        #expect(e.reports["a"] == 0.9 && !e.isComplete)
        let last = e.receive(0.8, from: "b", round: 5)
        #expect(last && e.isComplete)
        #expect(FinalEvaluation<Double>(round: 1, expected: []).isComplete, "nobody to ask: nothing to wait for")
    }

    @Test("impossible figures are named: accuracy outside 0…1 or NaN, no rows or more than 2⁴⁰, ε negative or infinite, a personalised accuracy outside 0…1")
    func figures() {
        let good = EvaluationFigures(accuracy: 0.9, examples: 100, epsilonSpent: 1, epsilonCap: 4, personalisedAccuracy: 0.95)
        #expect(good.problem == nil)
        func with(_ change: (inout EvaluationFigures) -> Void) -> String? { var f = good; change(&f); return f.problem }
        #expect(with { $0.accuracy = 1.5 } == "accuracy 1.5 is not in 0…1")
        #expect(with { $0.accuracy = .nan }?.hasPrefix("accuracy") == true)
        #expect(with { $0.examples = 0 } == "0 held-out rows")
        #expect(with { $0.examples = 1 << 41 } != nil)
        #expect(with { $0.epsilonSpent = -1 }?.contains("ε spent") == true)
        #expect(with { $0.epsilonCap = .infinity }?.contains("ε spent") == true)
        #expect(with { $0.personalisedAccuracy = 2 } == "personalised accuracy 2.0 is not in 0…1")
        #expect(with { $0.personalisedAccuracy = nil } == nil)
    }
}
