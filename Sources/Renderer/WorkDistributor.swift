import Tensors

/// Who computes the UNet batches of a denoising step.
///
/// Within a step every batch of windows is independent, so the batches can be spread over
/// processes (see the `Cluster` library's MPI distributor). Everything else in a step — input
/// preparation, the scheduler, its noise, the fusion — runs on every process from the same
/// predictions in the same order, so the canvas is the same bit for bit however the batches
/// were spread, and every process holds the whole state a resumable render saves.
public protocol WorkDistributor: Sendable {
    /// `work(i)` for every `i` in `0..<costs.count`, each computed by one process; every result,
    /// in order, on every process. `costs` are relative (e.g. UNet samples) and balance the split.
    func distribute(costs: [Int], _ work: (Int) -> [Tensor]) -> [[Tensor]]
}

/// Every batch in this process, in order.
public struct LocalDistributor: WorkDistributor {
    public init() {}

    public func distribute(costs: [Int], _ work: (Int) -> [Tensor]) -> [[Tensor]] {
        costs.indices.map(work)
    }
}

extension Array where Element == Int {
    /// Contiguous shares of these costs for `parts` workers: share `r` is
    /// `bounds[r]..<bounds[r + 1]`, each as close to an equal part of the total as whole items allow.
    /// Contiguous, so that a share's results travel as one message.
    public func balancedShares(_ parts: Int) -> [Int] {
        precondition(parts >= 1, "at least one share")
        let total = reduce(0, +)
        var bounds = [0], sum = 0, i = 0
        for r in 1..<parts {
            // the first item boundary where the running cost reaches r/parts of the total
            while i < count && (sum + self[i]) * parts <= r * total { sum += self[i]; i += 1 }
            // an item straddling the target goes to whichever side leaves the smaller excess
            if i < count && (sum + self[i]) * parts - r * total < r * total - sum * parts { sum += self[i]; i += 1 }
            bounds.append(i)
        }
        bounds.append(count)
        return bounds
    }
}
