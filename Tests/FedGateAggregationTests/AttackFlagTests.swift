import FedGateAggregation
import Testing

@Suite("Poisoning flags")
struct AttackFlagTests {
    @Test("a round flags the silos a robust aggregator excluded and the updates validation refused for their content, not a duplicate")
    func flagsOfAnOutcome() throws {
        let outcome = AggregationOutcome(parameters: [0], excluded: ["silo-9", "silo-2"], rejected: [
            UpdateRejection(silo: "silo-4", check: .norm, value: "norm 1.2e+05 > bound 10000"),
            UpdateRejection(silo: "silo-5", check: .nonFinite, value: "3 NaN values"),
            UpdateRejection(silo: "silo-6", check: .duplicate, value: "second update this round"),
        ])
        let flags = AttackFlag.of(outcome, strategy: "multi-krum:1")
        #expect(flags == [
            AttackFlag(silo: "silo-2", kind: .excluded, reason: "left out by multi-krum:1"),
            AttackFlag(silo: "silo-9", kind: .excluded, reason: "left out by multi-krum:1"),
            AttackFlag(silo: "silo-4", kind: .refused, reason: "norm check: norm 1.2e+05 > bound 10000"),
            AttackFlag(silo: "silo-5", kind: .refused, reason: "non_finite check: 3 NaN values"),
        ])
        #expect(AttackFlag.of(AggregationOutcome(parameters: [0]), strategy: "fedavg").isEmpty)
    }

    @Test("Multi-Krum's exclusion of a far-off update is a flag on that silo")
    func multiKrumFlagsTheOutlier() throws {
        var krum = try MultiKrum(byzantine: 1)
        let honest = (0..<4).map { i in ClientUpdate(silo: "h\(i)", delta: [1 + Float(i) * 0.01, 1, 1], examples: 10) }
        let outcome = try krum.aggregate(global: [0, 0, 0], updates: honest + [ClientUpdate(silo: "attacker", delta: [-40, 30, 25], examples: 10)])
        #expect(AttackFlag.of(outcome, strategy: "multi-krum:1").map(\.silo) == ["attacker"])
    }

    @Test("a silo flagged in as many distinct rounds as the threshold raises one alert, naming those rounds; flags in one round count once")
    func alertAfterRepeatedRounds() {
        var watch = AttackWatch(alertAfter: 3)
        let a = AttackFlag(silo: "a", kind: .excluded, reason: "left out by krum")
        let b = AttackFlag(silo: "b", kind: .refused, reason: "norm check")
        #expect(watch.record(round: 1, [a, a, b]).isEmpty)
        #expect(watch.record(round: 1, [a]).isEmpty, "a second flag in the same round is not a second round")
        #expect(watch.record(round: 2, [a]).isEmpty)
        let raised = watch.record(round: 4, [a, b])
        #expect(raised.map(\.silo) == ["a"] && raised.first?.rounds == [1, 2, 4])
        #expect(watch.record(round: 5, [a]).isEmpty, "one alert per silo and plan")
        #expect(watch.record(round: 6, [b]).map(\.rounds) == [[1, 4, 6]])
        #expect(watch.alerted == ["a", "b"])
    }

    @Test("the tally replayed flag by flag (a restarted broker reading its audit) ends where the live one did")
    func replayMatchesLive() {
        var live = AttackWatch(alertAfter: 2)
        var replayed = AttackWatch(alertAfter: 2)
        let rounds: [(Int, [String])] = [(1, ["x", "y"]), (2, ["x"]), (3, []), (4, ["y", "z"]), (5, ["z"])]
        var liveAlerts: [String] = [], replayAlerts: [String] = []
        for (round, silos) in rounds {
            let flags = silos.map { AttackFlag(silo: $0, kind: .excluded, reason: "r") }
            liveAlerts += live.record(round: round, flags).map(\.silo)
            for f in flags { replayAlerts += replayed.record(round: round, [f]).map(\.silo) }
        }
        #expect(live == replayed && liveAlerts == replayAlerts && liveAlerts == ["x", "y", "z"])
    }
}
