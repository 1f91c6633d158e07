/// Why a secure-aggregation round stopped. Every case names the silo or phase at fault and what
/// it means; none of them reveals a secret.
public enum SecureAggregationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Fewer than `threshold` silos remained at `phase`: the round aborts and nothing is unmasked.
    case belowThreshold(phase: String, survivors: Int, threshold: Int)
    /// A key advertisement's signature did not verify: the broker (or someone) substituted a key.
    case invalidSignature(silo: String)
    /// A message belonged to another round, or came twice: a replay.
    case replay(silo: String, detail: String)
    /// The broker's relayed view is inconsistent (a share withheld, a silo listed in one phase but
    /// not the one before, a request to reveal both kinds of share for the same peer).
    case inconsistentView(silo: String, detail: String)
    /// An encrypted share failed authentication or was addressed to someone else.
    case tamperedShare(from: String, to: String)
    /// A message was malformed (wrong length, unknown silo, bad parameters).
    case malformed(String)

    public var description: String {
        switch self {
        case .belowThreshold(let phase, let survivors, let threshold):
            return "secure aggregation aborted at \(phase): \(survivors) silos remain, the threshold is \(threshold); nothing was unmasked"
        case .invalidSignature(let silo):
            return "the key advertisement of silo '\(silo)' has an invalid signature: a key was substituted in transit; refusing to continue"
        case .replay(let silo, let detail):
            return "replayed or duplicated message from silo '\(silo)': \(detail)"
        case .inconsistentView(let silo, let detail):
            return "silo '\(silo)' received an inconsistent view from the broker: \(detail); refusing to continue"
        case .tamperedShare(let from, let to):
            return "the encrypted share from '\(from)' to '\(to)' failed authentication: it was altered or misrouted"
        case .malformed(let detail):
            return "malformed secure-aggregation input: \(detail)"
        }
    }
}
