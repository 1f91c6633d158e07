import FedGateLearning

/// A plan's run picked up from the store after a broker stopped (a restart, or a standby taking the
/// lead): a round left in flight is abandoned with the stage it stopped in (its silos released their
/// reservations when their streams ended), and the run goes on after the last round recorded, with
/// the silos of its committed rounds as participants.
public struct RunRecovery: Sendable, Equatable {
    /// A round as the store holds it.
    public struct StoredRound: Sendable, Equatable {
        public let number: Int
        public let stage: RoundStage
        public let survivors: [String]

        public init(number: Int, stage: RoundStage, survivors: [String]) {
            (self.number, self.stage, self.survivors) = (number, stage, survivors)
        }
    }

    /// A round to record as aborted, with the reason.
    public struct Abandoned: Sendable, Equatable {
        public let number: Int
        public let reason: String

        public init(number: Int, reason: String) { (self.number, self.reason) = (number, reason) }
    }

    public let abandoned: [Abandoned]
    public let nextRound: Int
    public let participants: Set<String>

    public init(rounds: [StoredRound]) {
        var abandoned: [Abandoned] = []
        var participants = Set<String>()
        var next = 1
        for round in rounds {
            switch round.stage {
            case .committed: participants.formUnion(round.survivors)
            case .aborted: break
            default: abandoned.append(Abandoned(number: round.number, reason: "the broker stopped while the round was \(round.stage.rawValue)"))
            }
            next = max(next, round.number + 1)
        }
        (self.abandoned, self.nextRound, self.participants) = (abandoned, next, participants)
    }
}

/// What a committed round checkpoints beside the model file: the consortium's standardisation and
/// the model's class count, as the JSON the store keeps (`means`, `scales`, `classes`).
public struct StandardisationCheckpoint: Codable, Sendable, Equatable {
    public var means: [Double]
    public var scales: [Double]
    public var classes: Int

    public init(_ standardisation: Standardisation, classes: Int) {
        means = standardisation.means.map(Double.init)
        scales = standardisation.scales.map(Double.init)
        self.classes = classes
    }

    /// Why the checkpoint cannot be used, or nil.
    public var problem: String? {
        guard means.count == scales.count else { return "has \(means.count) means and \(scales.count) scales" }
        guard means.allSatisfy(\.isFinite), scales.allSatisfy(\.isFinite) else { return "has a mean or scale that is not finite" }
        guard classes >= 1 else { return "has \(classes) classes" }  // 1: a regression model
        return nil
    }

    public var standardisation: Standardisation { Standardisation(means: means.map(Float.init), scales: scales.map(Float.init)) }
}
