import Renderer
import Tensors

/// Spreads each step's UNet batches over the processes of an MPI job: contiguous shares
/// balanced by cost, computed where they fall, then every prediction gathered to every process
/// (`MPI.allGather`), so every process steps and fuses the whole canvas itself.
///
/// Gathering the predictions, rather than summing partial value/count canvases with an
/// allreduce, is what keeps the canvas bit-identical to one process: a floating-point sum
/// depends on its grouping, and an allreduce's grouping depends on the number of processes.
/// The price is bytes: every window's prediction (C x 64 x 64 floats for SD at 512 px) instead
/// of two canvases per step; see benchmarks/README.md for the figures and a model of the cost.
public struct MPIDistributor: WorkDistributor {
    public let world: MPI

    public init(world: MPI) { self.world = world }

    public func distribute(costs: [Int], _ work: (Int) -> [Tensor]) -> [[Tensor]] {
        guard world.size > 1 else { return costs.indices.map(work) }
        let bounds = costs.balancedShares(world.size)
        let mine = (bounds[world.rank]..<bounds[world.rank + 1]).map(work)
        let gathered = world.allGather(TensorPacking.pack(mine))
        var all: [[Tensor]] = []
        all.reserveCapacity(costs.count)
        for (r, bytes) in gathered.enumerated() {
            guard let batches = TensorPacking.unpack(bytes), batches.count == bounds[r + 1] - bounds[r] else {
                world.abort(message: "the predictions from rank \(r) are malformed", code: 1)
            }
            all += batches
        }
        return all
    }
}

/// Lists of lists of tensors as bytes, for messages between processes of one job (same
/// machine architecture): counts and shapes as little-endian Int64, then the floats.
public enum TensorPacking {
    public static func pack(_ batches: [[Tensor]]) -> [UInt8] {
        var out: [UInt8] = []
        func put(_ value: Int) { withUnsafeBytes(of: Int64(value).littleEndian) { out += $0 } }
        put(batches.count)
        for batch in batches {
            put(batch.count)
            for tensor in batch {
                put(tensor.shape.count)
                tensor.shape.forEach(put)
                tensor.withUnsafeBufferPointer { out += UnsafeRawBufferPointer($0) }
            }
        }
        return out
    }

    /// nil when the bytes are not what `pack` writes.
    public static func unpack(_ bytes: [UInt8]) -> [[Tensor]]? {
        var at = 0
        func take() -> Int? {
            guard bytes.count - at >= 8 else { return nil }
            var value: Int64 = 0
            withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes[at..<(at + 8)]) }
            at += 8
            let v = Int64(littleEndian: value)
            return v >= 0 && v <= Int64(Int32.max) ? Int(v) : nil
        }
        guard let count = take() else { return nil }
        var batches: [[Tensor]] = []
        for _ in 0..<count {
            guard let n = take() else { return nil }
            var batch: [Tensor] = []
            for _ in 0..<n {
                guard let rank = take(), rank <= 8 else { return nil }
                var shape: [Int] = [], elements = 1
                for _ in 0..<rank {
                    guard let d = take() else { return nil }
                    let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                    guard !overflow else { return nil }
                    shape.append(d)
                    elements = product
                }
                guard (bytes.count - at) / 4 >= elements else { return nil }
                var data = [Float](repeating: 0, count: elements)
                data.withUnsafeMutableBytes { $0.copyBytes(from: bytes[at..<(at + 4 * elements)]) }
                at += 4 * elements
                batch.append(Tensor(shape: shape, data: data))
            }
            batches.append(batch)
        }
        return at == bytes.count ? batches : nil
    }
}
