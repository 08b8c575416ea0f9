import CKernels
import Foundation

/// Floats of the score block (query rows x keys): small enough to stay in L2 between the
/// GEMM that writes it, the softmax, and the GEMM that reads it...
private let scoreBlockFloats = 1 << 17
/// ...but at least this many query rows, or the GEMMs become too skinny to run fast.
private let minimumBlockRows = 64

extension Compute {
    /// Keys per block of the online softmax; nil (default) picks it for the precision. With more
    /// keys than this (and no causal mask) attention runs over blocks of keys and never holds a
    /// query's scores for all keys, so a block can cover more query rows in the same cache: the
    /// GEMMs then re-pack each key block for more rows (the UNet's self-attention and the VAE's
    /// mid-block, which attends over up to 65536 positions). 0 holds every row's scores whole.
    nonisolated(unsafe) public static var attentionKeyBlock: Int? = nil

    /// Measured on the SD 1.5 shapes (benchmarks/README.md, "Attention over key blocks"): 256
    /// keys (512 query rows) for float32; bf16's own GEMM runs the UNet's heads best at 512.
    static var effectiveAttentionKeyBlock: Int { attentionKeyBlock ?? (precision == .bf16 ? 512 : 256) }
}

/// Multi-head scaled dot-product attention, softmax(Q Kᵀ · scale [+ causal mask]) V.
///
/// `q` is [B, Nq, heads·d], `k` and `v` are [B, Nk, heads·d] with heads interleaved in the
/// channel dimension exactly as diffusers' and transformers' projections produce them, so no
/// head transposition is needed: each head is a strided view. Returns [B, Nq, heads·d].
public func scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, heads: Int,
                                      scale: Float? = nil, causal: Bool = false) -> Tensor {
    let b = q.shape[0], nq = q.shape[1], channels = q.shape[2]
    let nk = k.shape[1]
    precondition(k.shape == [b, nk, channels] && v.shape == k.shape,
                 "attention: q \(q.shape), k \(k.shape), v \(v.shape)")
    precondition(channels % heads == 0, "attention: \(channels) channels, \(heads) heads")
    let d = channels / heads
    let scale = scale ?? 1 / Float(d).squareRoot()
    let blockLimit = Compute.effectiveAttentionKeyBlock
    let keyBlock = !causal && blockLimit > 0 && nk > blockLimit ? blockLimit : nk
    let keyBlocks = (nk + keyBlock - 1) / keyBlock
    let rowsPerBlock = min(nq, max(minimumBlockRows, scoreBlockFloats / max(1, keyBlock)))
    let blocksPerHead = (nq + rowsPerBlock - 1) / rowsPerBlock
    let jobs = b * heads * blocksPerHead

    return Tensor(uninitializedShape: [b, nq, channels]) { out in
        q.withUnsafeBufferPointer { qp in
            k.withUnsafeBufferPointer { kp in
                v.withUnsafeBufferPointer { vp in
                    // The own GEMM: every head's keys (as Kᵀ) and values are packed once per key
                    // block, not per query block.
                    let format = Compute.gemmFormat
                    let kCount = format.map { pk_packed_b_count($0, d, keyBlock) } ?? 0
                    let vCount = format.map { pk_packed_b_count($0, keyBlock, d) } ?? 0
                    let perHead = keyBlocks * (kCount + vCount)
                    let packed = UnsafeMutablePointer<UInt32>.allocate(capacity: b * heads * perHead)
                    defer { packed.deallocate() }
                    if let format {
                        Compute.parallelFor(b * heads * keyBlocks) { job in
                            let (bh, kb) = (job / keyBlocks, job % keyBlocks)
                            let (bi, h) = (bh / heads, bh % heads)
                            let k0 = kb * keyBlock, kn = min(keyBlock, nk - k0)
                            let offset = (bi * nk + k0) * channels + h * d
                            let dst = packed + bh * perHead + kb * (kCount + vCount)
                            pk_pack_b(format, 1, d, kn, kp.baseAddress! + offset, channels, dst)
                            pk_pack_b(format, 0, kn, d, vp.baseAddress! + offset, channels, dst + kCount)
                        }
                    }
                    // Jobs are (batch, head, query block) triples spread over the workers, each
                    // with single-threaded GEMMs and one score buffer: per-head products are too
                    // small for OpenBLAS's own threading, which then spends its time
                    // synchronising, and a single head (the VAE's) still uses every core.
                    let workers = min(Compute.threads, jobs)
                    Compute.withSingleThreadedBLAS {
                        Compute.parallelFor(workers) { worker in
                            let s = pk_scratch(rowsPerBlock * keyBlock, 0)!
                            // The online softmax's running maxima and sums, one of each per row.
                            let maxima: UnsafeMutablePointer<Float>? = keyBlocks > 1 ? pk_scratch(2 * rowsPerBlock, 4) : nil
                            let sums = maxima.map { $0 + rowsPerBlock }
                            for job in stride(from: worker, to: jobs, by: workers) {
                                let block = job % blocksPerHead, bh = job / blocksPerHead
                                let (bi, h) = (bh / heads, bh % heads)
                                let r0 = block * rowsPerBlock, rows = min(rowsPerBlock, nq - r0)
                                let qh = qp.baseAddress! + (bi * nq + r0) * channels + h * d
                                let oh = out.baseAddress! + (bi * nq + r0) * channels + h * d
                                for kb in 0..<keyBlocks {
                                    let k0 = kb * keyBlock, kn = min(keyBlock, nk - k0)
                                    let beta: Float = kb == 0 ? 0 : 1
                                    let kh = kp.baseAddress! + (bi * nk + k0) * channels + h * d
                                    let vh = vp.baseAddress! + (bi * nk + k0) * channels + h * d
                                    let kPacked = packed + bh * perHead + kb * (kCount + vCount)
                                    if let format {
                                        pk_gemm_packed_b(format, 0, rows, kn, d, scale, qh, channels, kPacked, 0, s, kn)
                                    } else {
                                        sgemm(transB: true, m: rows, n: kn, k: d, alpha: scale,
                                              a: qh, lda: channels, b: kh, ldb: channels, c: s, ldc: kn)
                                    }
                                    if keyBlocks == 1 {
                                        pk_softmax_rows(s, rows, kn, causal ? r0 + 1 : 0)
                                    } else {
                                        pk_softmax_online(s, rows, kn, maxima, sums, kb == 0 ? nil : oh, channels, d)
                                    }
                                    if let format {
                                        pk_gemm_packed_b(format, 0, rows, d, kn, 1, s, kn, kPacked + kCount, beta, oh, channels)
                                    } else {
                                        sgemm(m: rows, n: d, k: kn, a: s, lda: kn, b: vh, ldb: channels,
                                              beta: beta, c: oh, ldc: channels)
                                    }
                                }
                                if keyBlocks > 1 { pk_divide_rows(oh, channels, sums, rows, d) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// In-place softmax of each row of a [rows, columns] matrix.
func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
    let chunk = 16
    Compute.parallelFor((rows + chunk - 1) / chunk) { c in
        let r0 = c * chunk
        pk_softmax_rows(p + r0 * columns, min(chunk, rows - r0), columns, 0)
    }
}

/// Softmax over the last dimension.
public func softmax(_ x: Tensor) -> Tensor {
    var y = x
    let columns = x.shape.last!
    y.withUnsafeMutableBufferPointer { p in
        softmaxRows(p.baseAddress!, rows: x.count / columns, columns: columns)
    }
    return y
}
