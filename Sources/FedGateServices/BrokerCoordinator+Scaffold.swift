import FedGatePolicy
import FedGateRounds

/// SCAFFOLD's server side (Karimireddy et al. 2020): the round's model file carries the control
/// variate `c`; each update taken adds Δyᵢ/(Kᵢ·ηᵢ) to the round's sum (`+Intake`); after
/// aggregation the control moves by the silos' changes Δcᵢ = −c − Δyᵢ/(Kᵢ·ηᵢ), derived from their
/// DP updates (post-processing: nothing more about a silo's rows is used).
extension BrokerCoordinator {
    /// A SCAFFOLD round begins: the control exists (zero at the plan's start) and the round's sum is empty.
    func scaffoldPrepare(_ plan: TrainingPlan, hash: String, dimension: Int, _ control: inout [Float]?) {
        guard plan.scaffold == true else { return }
        if control?.count != dimension { control = [Float](repeating: 0, count: dimension) }
        active[hash]!.scaffoldSum = [Float](repeating: 0, count: dimension)
    }

    /// c ← c + (1/N)·Σ Δcᵢ over the silos whose update was taken, N the silos the round offered.
    func scaffoldStep(_ hash: String, offered: Int, _ control: inout [Float]?) {
        guard let sum = active[hash]!.scaffoldSum, var c = control else { return }
        let n = Float(active[hash]!.scaffoldCount), total = Float(max(offered, active[hash]!.scaffoldCount, 1))
        for j in c.indices { c[j] += (-n * c[j] - sum[j]) / total }
        control = c
        active[hash]!.scaffoldSum = nil
    }
}
