import Testing
@testable import FedGateRounds

@Suite("Fair round slots for plans running at once")
struct RoundSlotsTests {
    @Test("with one slot, three plans take their rounds in turn: each finished round sends its plan behind the others")
    func roundRobin() {
        var slots = RoundSlots(limit: 1)
        let granted = [slots.ask("a"), slots.ask("b"), slots.ask("c")]
        #expect(granted == [true, false, false])
        #expect(slots.position(of: "b") == 1 && slots.position(of: "c") == 2 && slots.position(of: "a") == nil)
        var order = ["a"]
        var holder = "a"
        for _ in 0..<8 {
            guard let next = slots.release(holder) else { Issue.record("no plan got the slot"); return }
            _ = slots.ask(holder)   // the plan that just finished wants its next round: it queues behind the others
            order.append(next)
            holder = next
        }
        #expect(order == ["a", "b", "c", "a", "b", "c", "a", "b", "c"])
    }

    @Test("a plan asking while others wait queues behind them even when a slot is free; asking twice changes nothing; a plan that ends leaves the queue")
    func noOvertaking() {
        var slots = RoundSlots(limit: 2)
        let first = [slots.ask("a"), slots.ask("b"), slots.ask("c"), slots.ask("a"), slots.ask("c")]
        #expect(first == [true, true, false, true, false] && slots.queue == ["c"])
        let toC = slots.release("a")
        #expect(toC == "c" && slots.holders == ["b", "c"])
        let later = [slots.ask("d"), slots.ask("e")]
        #expect(later == [false, false])
        let ended = slots.release("e")
        #expect(ended == nil && slots.queue == ["d"], "a waiting plan that ends holds nothing and leaves the queue")
        let toD = slots.release("b")
        #expect(toD == "d" && slots.holders == ["c", "d"] && slots.queue.isEmpty)
        let last = [slots.release("c"), slots.release("d")]
        #expect(last == [nil, nil] && slots.holders.isEmpty)
        let free = slots.ask("f")
        #expect(free)
    }
}
