import CKernels

extension Compute {
    /// Floats of transformed input and output (V and M) a Winograd convolution holds at once
    /// (default 12 Mi, ~48 MB): bounds its scratch memory whatever the image size.
    nonisolated(unsafe) public static var winogradScratchFloats = 12 << 20

    /// Whether float32 3x3 stride-1 convolutions on planes of at least 32x32 pixels use Winograd
    /// F(4x4, 3x3) (default on): a quarter of the multiplies of the direct method, with errors
    /// of up to ~5e-6 of the output's largest value instead of ~1e-7 (`KernelTests`).
    nonisolated(unsafe) public static var winograd = true

    /// The convolutions that go through Winograd: 3x3, stride 1, wide enough channels
    /// for the 36 products to be worth their transforms, and enough pixels for the per-call
    /// weight transform to be small beside the products.
    static func usesWinograd(channels: Int, outChannels: Int, kernel: (Int, Int), stride: Int,
                             outputPixels: Int) -> Bool {
        winograd && kernel == (3, 3) && stride == 1
            && min(channels, outChannels) >= 16 && outputPixels >= 32 * 32
    }
}

/// Winograd F(4x4, 3x3) convolution of `n` NCHW images: weights transformed once per call, then
/// chunks of whole tile rows (over all images) go through the input transform, 36 single-threaded
/// GEMMs U[α] · V[α] split over the workers, and the output transform with the bias.
func winogradConvolution(_ input: UnsafePointer<Float>, n: Int, channels cin: Int, height h: Int, width w: Int,
                         weight: UnsafePointer<Float>, outChannels cout: Int, padding: Padding2D,
                         outHeight hout: Int, outWidth wout: Int, bias: UnsafePointer<Float>?,
                         output: UnsafeMutablePointer<Float>) {
    let tilesX = (wout + 3) / 4, tilesY = (hout + 3) / 4
    let tileRows = n * tilesY
    let u = UnsafeMutablePointer<Float>.allocate(capacity: 36 * cout * cin)
    defer { u.deallocate() }
    let parts = min(cout, 4 * Compute.threads)
    Compute.parallelFor(parts) { part in
        let first = cout * part / parts, last = cout * (part + 1) / parts
        pk_winograd_weights(weight, cout, cin, first, last - first, u)
    }
    let rowsPerChunk = max(1, min(tileRows, Compute.winogradScratchFloats / (36 * (cin + cout) * tilesX)))
    let v = UnsafeMutablePointer<Float>.allocate(capacity: 36 * cin * rowsPerChunk * tilesX)
    let m = UnsafeMutablePointer<Float>.allocate(capacity: 36 * cout * rowsPerChunk * tilesX)
    defer { v.deallocate(); m.deallocate() }
    for r0 in stride(from: 0, to: tileRows, by: rowsPerChunk) {
        let rows = min(rowsPerChunk, tileRows - r0), tiles = rows * tilesX
        Compute.parallelFor(rows * cin) { job in
            let (r, c) = (job / cin, job % cin)
            let (image, tileRow) = ((r0 + r) / tilesY, (r0 + r) % tilesY)
            pk_winograd_input(input + (image * cin + c) * h * w, 1, h, w, padding.top, padding.left, tileRow, tilesX,
                              v + c * tiles + r * tilesX, tiles, cin * tiles)
        }
        Compute.withSingleThreadedBLAS {
            Compute.parallelFor(36) { point in
                sgemm(m: cout, n: tiles, k: cin, a: u + point * cout * cin, lda: cin, b: v + point * cin * tiles,
                      ldb: tiles, c: m + point * cout * tiles, ldc: tiles)
            }
        }
        Compute.parallelFor(rows * cout) { job in
            let (r, c) = (job / cout, job % cout)
            let (image, tileRow) = ((r0 + r) / tilesY, (r0 + r) % tilesY)
            pk_winograd_output(m + c * tiles + r * tilesX, tiles, cout * tiles, 1, tileRow, tilesX, hout, wout,
                               bias.map { $0 + c }, output + (image * cout + c) * hout * wout)
        }
    }
}
