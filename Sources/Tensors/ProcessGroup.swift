/// The processes of one job working on one picture (an MPI job; see the `Cluster` library), as
/// the layers that divide work among them see it: a rank, a size and two collectives on bytes.
/// Reductions are left to the callers, who do them in a fixed order so that results do not
/// depend on the number of processes.
public protocol ProcessGroup: AnyObject, Sendable {
    /// This process, 0 ..< `size`.
    var rank: Int { get }
    var size: Int { get }
    /// Every process's `bytes`, in rank order, on every process.
    func allGather(_ bytes: [UInt8]) -> [[UInt8]]
    /// Sends `outgoing[r]` to rank `r` (this rank's own entry is ignored) and returns what each
    /// rank sent here (empty for this rank). Every process must call it at the same point.
    func exchange(_ outgoing: [[UInt8]]) -> [[UInt8]]
}

extension Array where Element == Int {
    /// Contiguous shares of these costs for `parts` workers: share `r` is
    /// `bounds[r]..<bounds[r + 1]`, each as close to an equal part of the total as whole items
    /// allow. Contiguous, so that a share's results travel as one message.
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

/// Floats as bytes and back, for messages between processes of one job (same architecture).
public extension Tensor {
    var bytes: [UInt8] { withUnsafeBufferPointer { Array(UnsafeRawBufferPointer($0)) } }

    /// nil when `bytes` do not hold exactly `shape`'s floats.
    init?(shape: [Int], bytes: [UInt8]) {
        let count = shape.reduce(1, *)
        guard bytes.count == 4 * count else { return nil }
        var data = [Float](repeating: 0, count: count)
        data.withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
        self.init(shape: shape, data: data)
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
