import CKernels
import Foundation

/// Floats of the score block (query rows x keys): small enough to stay in L2 between the
/// GEMM that writes it, the softmax, and the GEMM that reads it...
private let scoreBlockFloats = 1 << 17
/// ...but at least this many query rows, or the GEMMs become too skinny to run fast (the VAE's
/// mid-block attends over 32768 keys at 512x4096).
private let minimumBlockRows = 64

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
    let rowsPerBlock = min(nq, max(minimumBlockRows, scoreBlockFloats / max(1, nk)))
    let blocksPerHead = (nq + rowsPerBlock - 1) / rowsPerBlock
    let jobs = b * heads * blocksPerHead

    return Tensor(uninitializedShape: [b, nq, channels]) { out in
        q.withUnsafeBufferPointer { qp in
            k.withUnsafeBufferPointer { kp in
                v.withUnsafeBufferPointer { vp in
                    // bf16: every head's keys (as Kᵀ) and values are packed once, not per query block.
                    let bf16 = Compute.precision == .bf16
                    let kCount = bf16 ? pk_bf16_packed_b_count(d, nk) : 0
                    let vCount = bf16 ? pk_bf16_packed_b_count(nk, d) : 0
                    let packed = UnsafeMutablePointer<UInt32>.allocate(capacity: b * heads * (kCount + vCount))
                    defer { packed.deallocate() }
                    if bf16 {
                        Compute.parallelFor(b * heads) { bh in
                            let (bi, h) = (bh / heads, bh % heads)
                            let offset = bi * nk * channels + h * d
                            let dst = packed + bh * (kCount + vCount)
                            pk_bf16_pack_b(1, d, nk, kp.baseAddress! + offset, channels, dst)
                            pk_bf16_pack_b(0, nk, d, vp.baseAddress! + offset, channels, dst + kCount)
                        }
                    }
                    // Jobs are (batch, head, query block) triples spread over the workers, each
                    // with single-threaded GEMMs and one score buffer: per-head products are too
                    // small for OpenBLAS's own threading, which then spends its time
                    // synchronising, and a single head (the VAE's) still uses every core.
                    let workers = min(Compute.threads, jobs)
                    Compute.withSingleThreadedBLAS {
                        Compute.parallelFor(workers) { worker in
                            let s = pk_scratch(rowsPerBlock * nk, 0)!
                            for job in stride(from: worker, to: jobs, by: workers) {
                                let block = job % blocksPerHead, bh = job / blocksPerHead
                                let (bi, h) = (bh / heads, bh % heads)
                                let r0 = block * rowsPerBlock, rows = min(rowsPerBlock, nq - r0)
                                let qh = qp.baseAddress! + (bi * nq + r0) * channels + h * d
                                let oh = out.baseAddress! + (bi * nq + r0) * channels + h * d
                                if bf16 {
                                    let kh = packed + bh * (kCount + vCount)
                                    pk_gemm_bf16_packed_b(0, rows, nk, d, scale, qh, channels, kh, 0, s, nk)
                                    pk_softmax_rows(s, rows, nk, causal ? r0 + 1 : 0)
                                    pk_gemm_bf16_packed_b(0, rows, d, nk, 1, s, nk, kh + kCount, 0, oh, channels)
                                    continue
                                }
                                let kh = kp.baseAddress! + bi * nk * channels + h * d
                                let vh = vp.baseAddress! + bi * nk * channels + h * d
                                sgemm(transB: true, m: rows, n: nk, k: d, alpha: scale,
                                      a: qh, lda: channels, b: kh, ldb: channels, c: s, ldc: nk)
                                pk_softmax_rows(s, rows, nk, causal ? r0 + 1 : 0)
                                sgemm(m: rows, n: d, k: nk, a: s, lda: nk, b: vh, ldb: channels, c: oh, ldc: channels)
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
