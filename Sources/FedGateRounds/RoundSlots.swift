/// The broker's fair scheduler for plans running at once (`max_concurrent_rounds`): at most `limit`
/// rounds in flight across plans, and a plan that wants its next round queues behind the plans
/// already waiting, so rounds go round-robin between plans instead of to whichever asks fastest.
/// A plan holds a slot from its round's offer to its commit or abort. Pure: the coordinator suspends
/// and resumes the plans.
public struct RoundSlots: Sendable, Equatable {
    public let limit: Int
    public private(set) var holders: Set<String> = []
    /// Plans waiting for a slot, first come first.
    public private(set) var queue: [String] = []

    public init(limit: Int) {
        precondition(limit >= 1, "at least one round at a time")
        self.limit = limit
    }

    /// A plan asks for a slot for its next round: granted now (true) when one is free and no plan
    /// waits before it, else queued (false). Asking again while holding or queued changes nothing.
    public mutating func ask(_ plan: String) -> Bool {
        if holders.contains(plan) { return true }
        if queue.contains(plan) { return false }
        if holders.count < limit, queue.isEmpty {
            holders.insert(plan)
            return true
        }
        queue.append(plan)
        return false
    }

    /// A plan's round ended (or the plan did): its slot goes to the first plan waiting, which is returned.
    public mutating func release(_ plan: String) -> String? {
        queue.removeAll { $0 == plan }
        guard holders.remove(plan) != nil, holders.count < limit, !queue.isEmpty else { return nil }
        let next = queue.removeFirst()
        holders.insert(next)
        return next
    }

    /// Where a waiting plan stands (1: next), or nil when it does not wait.
    public func position(of plan: String) -> Int? { queue.firstIndex(of: plan).map { $0 + 1 } }
}
