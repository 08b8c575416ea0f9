import Tensors

/// Who computes the UNet batches of a denoising step.
///
/// Within a step every batch of windows is independent, so the batches can be spread over
/// processes (`GroupDistributor`, given an MPI job by the `Cluster` library). Everything else in a step — input
/// preparation, the scheduler, its noise, the fusion — runs on every process from the same
/// predictions in the same order, so the canvas is the same bit for bit however the batches
/// were spread, and every process holds the whole state a resumable render saves.
public protocol WorkDistributor: Sendable {
    /// Computes `work(i)` for every `i` in `0..<costs.count`, each in one process, and hands every
    /// result to `use` in every process, in order of `i`. `costs` are relative (e.g. UNet samples)
    /// and balance the split.
    func distribute(costs: [Int], _ work: (Int) -> [Tensor], use: (Int, [Tensor]) -> Void)
}

/// Every batch in this process, each used as soon as it is computed (one batch's predictions in
/// memory at a time).
public struct LocalDistributor: WorkDistributor {
    public init() {}

    public func distribute(costs: [Int], _ work: (Int) -> [Tensor], use: (Int, [Tensor]) -> Void) {
        for i in costs.indices { use(i, work(i)) }
    }
}

/// Spreads each step's UNet batches over the processes of a job (an MPI job: `Cluster`):
/// contiguous shares balanced by cost, computed where they fall, then every prediction gathered
/// to every process (`ProcessGroup.allGather`), so every process steps and fuses the whole
/// canvas itself.
///
/// Gathering the predictions, rather than summing partial value/count canvases with an
/// allreduce, is what keeps the canvas bit-identical to one process: a floating-point sum
/// depends on its grouping, and an allreduce's grouping depends on the number of processes.
/// The price is bytes: every window's prediction (C x 64 x 64 floats for SD at 512 px) instead
/// of two canvases per step, and every prediction of the step in memory at once; see
/// benchmarks/README.md for the figures and a model of the cost.
public struct GroupDistributor: WorkDistributor {
    public let world: any ProcessGroup

    public init(world: any ProcessGroup) { self.world = world }

    public func distribute(costs: [Int], _ work: (Int) -> [Tensor], use: (Int, [Tensor]) -> Void) {
        let bounds = costs.balancedShares(world.size)
        let mine = (bounds[world.rank]..<bounds[world.rank + 1]).map(work)
        var i = 0
        for (r, bytes) in world.allGather(TensorPacking.pack(mine)).enumerated() {
            // the bytes came from this program on another rank
            guard let batches = TensorPacking.unpack(bytes), batches.count == bounds[r + 1] - bounds[r] else {
                preconditionFailure("the predictions from rank \(r) are malformed")
            }
            for batch in batches { use(i, batch); i += 1 }
        }
    }
}
