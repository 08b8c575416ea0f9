import Cluster
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Models
import Imaging
import Renderer
import Tensors
import Tokenization
import Weights

/// The rows `panorama-benchmarks` measures, in the order `all` runs them (`all` leaves out `upscale`).
let rowNames = ["sgemm", "text-encoder", "unet", "unet-layers", "vae-decode-512", "vae-layers", "vae-decode-4096",
                "vae-decode-512-tiled", "vae-decode-4096-tiled", "panorama-step", "compose-step", "load", "load-lora", "lcm-512", "lcm-4096", "lcm-4096-taesd", "preview",
                "upscale", "mpi-step", "mpi-decode", "vae-decode-journal"]

/// Command-line settings shared by every row.
struct Options {
    var cache: URL
    var layout: URL
    var runs: Int?
    var warmups: Int?
    var threads = 2
    var sgemmGflops: Double?
    var json = false
    var skip4096 = false
    var cold = false
    var precision = Precision.fp32
    /// Winograd F(4x4, 3x3) for float32 3x3 convolutions (`--no-winograd` turns it off).
    var winograd = true
    /// Keys per block of attention's online softmax (`--attention-key-block`; 0: whole rows;
    /// nil: the library's choice for the precision).
    var attentionKeyBlock: Int? = nil
    /// Forces the tiled VAE's temporary-file format (nil: its own choice).
    var fileFormat: CanvasStore.FileFormat?
    var memoryLimit: Int?
    /// `upscale`: one phase only (encode, denoise, decode), and where phases hand over latents.
    var phase: String?
    var state: URL?
    /// `upscale --phase denoise`: start from seeded Gaussian latents of the encode's shape instead
    /// of the encode phase's file (the UNet's work does not depend on the values).
    var syntheticLatents = false
    /// `--fp32-gemm own|openblas`: float32 products on the own AVX-512 kernel or OpenBLAS (nil:
    /// the library's default, own where the CPU has AVX-512).
    var ownFloat32GEMM: Bool?
    /// `upscale`: the side of the square result.
    var target = 2048
    /// `vae-layers`: latent width (64 = the 512x512 decode, 512 = the 512x4096 one).
    var latentWidth = 64
    /// `mpi-step`: the canvas width in pixels (height 512).
    var canvasWidth = 2048
    /// `unet-layers` / `vae-layers`: replay only this kind of layer (conv, linear, attention, …).
    var only: String?
    var verbose = false
}

/// One GEMM shape, row-major C[m, n] = A[m, k] · op(B), as the kernels call it.
struct GemmShape {
    let m: Int, n: Int, k: Int, transB: Bool, label: String
    var flop: Double { 2 * Double(m) * Double(n) * Double(k) }
}

/// Shapes of the UNet's 3x3 convolutions as `conv2d` issues them (M = Cout, N = pixels,
/// K = Cin·9) at the three busiest resolutions, plus a square GEMM: the ceiling reference.
let convLikeShapes = [
    GemmShape(m: 320, n: 4096, k: 2880, transB: false, label: "320x4096x2880 (64x64 conv, 320 ch)"),
    GemmShape(m: 640, n: 1024, k: 5760, transB: false, label: "640x1024x5760 (32x32 conv, 640 ch)"),
    GemmShape(m: 1280, n: 256, k: 11520, transB: false, label: "1280x256x11520 (16x16 conv, 1280 ch)"),
    GemmShape(m: 2048, n: 2048, k: 2048, transB: false, label: "2048x2048x2048"),
]
/// Attention-like shapes (one head at 64x64: QKᵀ and P·V), for information only.
let attentionShapes = [
    GemmShape(m: 4096, n: 4096, k: 40, transB: true, label: "4096x4096x40 (QK^T, one head)"),
    GemmShape(m: 4096, n: 40, k: 4096, transB: false, label: "4096x40x4096 (PV, one head)"),
]

/// Which GEMM `timeGemms` times.
enum GemmKind { case openBLAS, ownFloat32, ownBF16 }

/// Best-of-`runs` seconds of each shape, after one warm-up, on `Compute.threads` threads: OpenBLAS's
/// cblas_sgemm, or the own float32 or bf16 GEMM through `gemm`.
func timeGemms(_ shapes: [GemmShape], runs: Int, kind: GemmKind = .openBLAS) -> [[Double]] {
    let (savedPrecision, savedOwn) = (Compute.precision, Compute.ownFloat32GEMM)
    Compute.precision = kind == .ownBF16 ? .bf16 : .fp32
    Compute.ownFloat32GEMM = kind == .ownFloat32
    defer { (Compute.precision, Compute.ownFloat32GEMM) = (savedPrecision, savedOwn) }
    var generator = TorchGenerator(seed: 7)
    return shapes.map { s in
        let a = generator.randn([s.m * s.k]), b = generator.randn([s.k * s.n])
        var c = Tensor(zeros: [s.m * s.n])
        return a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    time(warmups: 1, runs: runs) {
                        gemm(transB: s.transB, m: s.m, n: s.n, k: s.k, a: ap.baseAddress!, lda: s.k,
                             b: bp.baseAddress!, ldb: s.transB ? s.k : s.n, c: cp.baseAddress!, ldc: s.n)
                    }
                }
            }
        }
    }
}

/// The reference rate: total FLOP of the conv-like shapes over the sum of their best times.
func measureSgemmRate(runs: Int = 3) -> Double {
    let times = timeGemms(convLikeShapes, runs: runs)
    return convLikeShapes.map(\.flop).reduce(0, +) / 1e9 / times.map { $0.min()! }.reduce(0, +)
}

/// Runs one row in this process.
func runRow(_ row: String, _ o: Options) throws -> RowResult {
    if o.runs == 0 && row != "compose-step" && row != "upscale" {
        throw BenchmarkError("--runs 0 only applies to compose-step (counts without timing) and upscale (the disk plan)")
    }
    Compute.threads = o.threads
    Compute.retainFreedMemory()
    let folderURL = try RandomWeights.ensure(cache: o.cache, layout: o.layout)
    let folder = try DiffusersFolder(url: folderURL)
    var generator = TorchGenerator(seed: 0)
    let sgemmRate = row == "sgemm" ? nil : (o.sgemmGflops ?? measureSgemmRate())
    if let own = o.ownFloat32GEMM { Compute.ownFloat32GEMM = own }
    Compute.precision = o.precision
    Compute.winograd = o.winograd
    Compute.attentionKeyBlock = o.attentionKeyBlock
    var result: RowResult
    let probe: LoadProbe

    switch row {
    case "sgemm":
        let runs = o.runs ?? 5
        probe = LoadProbe()
        let times = timeGemms(convLikeShapes, runs: runs)
        let attention = timeGemms(attentionShapes, runs: max(1, runs / 2))
        // One "run" = one GEMM of every conv-like shape; its total time per run, best first.
        let perRun = (0..<runs).map { r in times.map { $0[r] }.reduce(0, +) }
        result = RowResult(row: row, what: "OpenBLAS cblas_sgemm, conv-like shapes (one of each per run)",
                           seconds: perRun, warmups: 1, gflop: convLikeShapes.map(\.flop).reduce(0, +) / 1e9)
        // The ceiling is the sum of the per-shape best times, which can beat the best single run.
        let rate = result.gflop! / times.map { $0.min()! }.reduce(0, +)
        result.sgemmGflops = rate
        for (s, t) in zip(convLikeShapes + attentionShapes, times + attention) {
            result.extra["GFLOP/s " + s.label] = s.flop / 1e9 / t.min()!
        }
        let shapes = convLikeShapes + attentionShapes
        if Compute.ownFloat32GEMM {
            for (s, t) in zip(shapes, timeGemms(shapes, runs: runs, kind: .ownFloat32)) {
                result.extra["own fp32 GFLOP/s " + s.label] = s.flop / 1e9 / t.min()!
            }
        }
        if o.precision == .bf16 {
            for (s, t) in zip(shapes, timeGemms(shapes, runs: runs, kind: .ownBF16)) {
                result.extra["bf16 GFLOP/s " + s.label] = s.flop / 1e9 / t.min()!
            }
        }

    case "unet":
        let unet = try UNet2DConditionModel(config: folder.config(UNetConfig.self, for: "unet"),
                                            weights: folder.weights(for: "unet"))
        let sample = generator.randn([2, 4, 64, 64]), context = generator.randn([2, 77, 768])
        var out = sample
        probe = LoadProbe()
        let seconds = time(warmups: o.warmups ?? 1, runs: o.runs ?? 3) {
            out = unet(sample, timestep: 981, encoderHiddenStates: context)
        }
        let flops = unetFlops(unet.config, batch: 2, height: 64, width: 64, tokens: 77)
        result = RowResult(row: row, what: "UNet, batch 2 (one CFG call), 64x64 latent, 77x768 context",
                           seconds: seconds, warmups: o.warmups ?? 1, gflop: flops.gflop)
        result.flopBreakdown = flops.breakdown
        result.extra["output max |x|"] = Double(out.maxAbs)

    case "vae-decode-512", "vae-decode-4096", "vae-decode-512-tiled", "vae-decode-4096-tiled":
        let wide = row.hasPrefix("vae-decode-4096"), tiled = row.hasSuffix("-tiled")
        let vae = try AutoencoderKL(config: folder.config(AutoencoderKLConfig.self, for: "vae"),
                                    weights: folder.weights(for: "vae"))
        let latents = generator.randn([1, 4, 64, wide ? 512 : 64])
        var out = latents
        let warmups = o.warmups ?? (wide ? 0 : 1), runs = o.runs ?? (wide ? 1 : 3)
        probe = LoadProbe()
        var tiling = VAETiling(fileFormat: o.fileFormat ?? .float32)
        if let limit = o.memoryLimit { tiling.memoryLimit = limit }
        let plannedDisk = vae.temporaryFileBytes(height: 512, width: wide ? 4096 : 512, tiling: tiling, encoding: false)
        CanvasStore.resetPeakFileBytes()
        let seconds = try time(warmups: warmups, runs: runs) {
            out = tiled ? try vae.decode(latents, tiling: tiling) : vae.decode(latents)
        }
        let flops = vaeDecodeFlops(vae.config, batch: 1, height: 64, width: wide ? 512 : 64)
        result = RowResult(row: row, what: "VAE decode 64x\(wide ? 512 : 64) latent -> 512x\(wide ? 4096 : 512)\(tiled ? ", tiled (default VAETiling)" : "")",
                           seconds: seconds, warmups: warmups, gflop: flops.gflop)
        result.flopBreakdown = flops.breakdown
        result.extra["output max |x|"] = Double(out.maxAbs)
        if tiled {
            result.extra["temporary files, GiB: planned"] = Double(plannedDisk) / Double(1 << 30)
            result.extra["temporary files, GiB: peak"] = Double(CanvasStore.peakFileBytes) / Double(1 << 30)
            result.extra["temporary file format"] = tiling.fileFormat.rawValue
        }

    case "mpi-decode":
        // The tiled decode of a 512x`--canvas-width` picture (default VAETiling) with its rows of
        // tiles shared by the MPI job it runs in; a hash of the output's bits to compare runs.
        let world = benchmarkWorld
        let vae = try AutoencoderKL(config: folder.config(AutoencoderKLConfig.self, for: "vae"),
                                    weights: folder.weights(for: "vae"))
        let latents = generator.randn([1, 4, 64, o.canvasWidth / 8])
        var tiling = VAETiling(fileFormat: o.fileFormat ?? .float32)
        if let limit = o.memoryLimit { tiling.memoryLimit = limit }
        tiling.processes = world.flatMap { $0.size > 1 ? $0 : nil }
        var out = latents
        let warmups = o.warmups ?? 0
        probe = LoadProbe()
        let (sent, received) = (world?.bytesSent ?? 0, world?.bytesReceived ?? 0)
        let seconds = try time(warmups: warmups, runs: o.runs ?? 1) { out = try vae.decode(latents, tiling: tiling) }
        let passes = Double(warmups + (o.runs ?? 1))
        let flops = vaeDecodeFlops(vae.config, batch: 1, height: 64, width: o.canvasWidth / 8)
        let ranks = world?.size ?? 1
        result = RowResult(row: row, what: "tiled VAE decode 64x\(o.canvasWidth / 8) latent -> 512x\(o.canvasWidth), on \(ranks) process\(ranks == 1 ? "" : "es") x \(o.threads) thread\(o.threads == 1 ? "" : "s")",
                           seconds: seconds, warmups: warmups, gflop: flops.gflop)
        var hash = FNV1a()
        out.withUnsafeBufferPointer { for x in $0 { hash.add(UInt64(x.bitPattern)) } }
        result.extra["output bits, FNV-1a"] = hash.hex
        result.extra["processes"] = ranks
        result.extra["threads per process"] = o.threads
        result.extra["bytes sent per decode (rank 0)"] = Double((world?.bytesSent ?? 0) - sent) / passes
        result.extra["bytes received per decode (rank 0)"] = Double((world?.bytesReceived ?? 0) - received) / passes

    case "vae-decode-journal":
        // What resumability costs a long decode: the tiled decode of a 64x128 latent (512x1024)
        // with and without a TiledPassJournal, runs interleaved (the fastest of each counts), maps
        // in files (--memory-limit, default 0, as in a huge decode) or in memory.
        let vae = try AutoencoderKL(config: folder.config(AutoencoderKLConfig.self, for: "vae"),
                                    weights: folder.weights(for: "vae"))
        let latents = generator.randn([1, 4, 64, 128])
        var tiling = VAETiling(memoryLimit: o.memoryLimit ?? 0, fileFormat: o.fileFormat ?? .float32)
        tiling.temporaryDirectory = FileManager.default.temporaryDirectory.path
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vae-journal-\(getpid())")
        var plain: [Double] = [], journaled: [Double] = [], peaks = (0, 0)
        var journal = TiledPassJournal(directory: directory)
        probe = LoadProbe()
        for _ in 0..<(o.runs ?? 2) {
            CanvasStore.resetPeakFileBytes()
            plain += try time(warmups: 0, runs: 1) { _ = try vae.decode(latents, tiling: tiling) }
            peaks.0 = CanvasStore.peakFileBytes
            CanvasStore.resetPeakFileBytes()
            let interval = ProcessInfo.processInfo.environment["PANORAMA_VAE_CHECKPOINT_SECONDS"].flatMap(Double.init)
            journal = TiledPassJournal(directory: directory, checkpointInterval: interval ?? 60)
            if interval != nil { journal.copyTimeShare = 1 }  // as the command does
            journaled += try time(warmups: 0, runs: 1) { _ = try vae.decode(latents, tiling: tiling, journal: journal) }
            peaks.1 = CanvasStore.peakFileBytes
        }
        journal.remove()
        let flops = vaeDecodeFlops(vae.config, batch: 1, height: 64, width: 128)
        result = RowResult(row: row, what: "VAE decode 64x128 latent -> 512x1024, tiled (maps \(tiling.memoryLimit == 0 ? "in files" : "up to \(tiling.memoryLimit >> 20) MiB in memory")), with a journal",
                           seconds: journaled, warmups: 0, gflop: flops.gflop)
        result.extra["without a journal, s (fastest)"] = plain.min()!
        result.extra["with a journal, s (fastest)"] = journaled.min()!
        result.extra["overhead, %"] = 100 * (journaled.min()! / plain.min()! - 1)
        result.extra["journal records"] = Double(journal.records)
        result.extra["journal records and copies, s"] = journal.recordSeconds
        result.extra["in-memory maps copied, MiB"] = Double(journal.copiedBytes >> 20)
        result.extra["files, GiB: without a journal"] = Double(peaks.0) / Double(1 << 30)
        result.extra["files, GiB: with a journal"] = Double(peaks.1) / Double(1 << 30)
        result.extra["files, GiB: journal bound"] = Double(vae.temporaryFileBytes(height: 512, width: 1024, tiling: tiling, encoding: false,
                                                                                   journaled: true)) / Double(1 << 30)

    case "unet-layers", "vae-layers":
        // The layers of the unet / vae-decode-512 rows replayed kind by kind (see LayerReplay).
        let unet = row == "unet-layers"
        let flops = unet
            ? unetFlops(try folder.config(UNetConfig.self, for: "unet"), batch: 2, height: 64, width: 64, tokens: 77)
            : vaeDecodeFlops(try folder.config(AutoencoderKLConfig.self, for: "vae"), batch: 1, height: 64,
                             width: o.latentWidth)
        let ops = flops.ops.filter { o.only == nil || $0.kind == o.only }
        var replay = LayerReplay()
        replay.verbose = o.verbose
        replay.vae = !unet
        let warmups = o.warmups ?? 1
        for _ in 0..<warmups { _ = replay.run(ops) }
        probe = LoadProbe()
        let passes = (0..<(o.runs ?? 2)).map { _ in replay.run(ops) }
        let source = unet ? "unet" : "vae-decode (64x\(o.latentWidth) latent)"
        result = RowResult(row: row, what: "the \(source) row's \(o.only ?? "") layers replayed one kernel call at a time",
                           seconds: passes.map { $0.values.reduce(0, +) }, warmups: warmups,
                           gflop: o.only == nil ? flops.gflop : nil)
        result.flopBreakdown = flops.breakdown
        let gflop = ["conv": flops.conv, "linear": flops.linear, "attention": flops.attention]
        for kind in ["conv", "linear", "attention", "groupnorm", "layernorm"] {
            let best = passes.compactMap { $0[kind] }.min() ?? 0
            guard best > 0 else { continue }
            result.extra["\(kind) seconds"] = best
            if let g = gflop[kind] { result.extra["\(kind) GFLOP/s"] = g / 1e9 / best }
        }
        result.note = "kernel time only; the whole-model row minus this is the time outside these kernels"

    case "text-encoder":
        let encoder = try CLIPTextModel(config: folder.config(CLIPTextConfig.self, for: "text_encoder"),
                                        weights: folder.weights(for: "text_encoder"))
        let tokenizer = try CLIPTokenizer(directory: folder.componentDirectory("tokenizer"))
        let ids = ["", "snowy mountains at sunset, a wide panorama"].map { tokenizer($0).ids }
        var out = Tensor(zeros: [1])
        let warmups = o.warmups ?? 1
        probe = LoadProbe()
        let seconds = try time(warmups: warmups, runs: o.runs ?? 10) { out = try encoder(ids) }
        let flops = textEncoderFlops(encoder.config, batch: 2, tokens: ids[0].count)
        result = RowResult(row: row, what: "CLIP text encoder, 2 x \(ids[0].count) tokens",
                           seconds: seconds, warmups: warmups, gflop: flops.gflop)
        result.flopBreakdown = flops.breakdown
        result.extra["output max |x|"] = Double(out.maxAbs)

    case "panorama-step":
        let model = try StableDiffusionModel(folder: folderURL)
        let pipeline = PanoramaPipeline(model: model)
        var settings = PanoramaSettings(prompt: "snowy mountains at sunset", width: 2048, height: 512)
        settings.seed = 1
        try pipeline.validate(settings)
        var loop = try pipeline.denoisingLoop(settings)
        let warmups = o.warmups ?? 0
        probe = LoadProbe()
        let seconds = time(warmups: warmups, runs: o.runs ?? 1) { _ = loop.next() }
        let views = loop.views.count
        let flops = unetFlops(model.unet.config, batch: 2, height: 64, width: 64, tokens: 77) * Double(views)
        result = RowResult(row: row, what: "one MultiDiffusion DDIM step, 512x2048 canvas, \(views) views, CFG, view batch 1",
                           seconds: seconds, warmups: warmups, gflop: flops.gflop)
        result.flopBreakdown = flops.breakdown
        result.extra["views"] = views
        result.extra["seconds per view (min)"] = seconds.min()! / Double(views)
        result.extra["50 steps, hours (from min)"] = seconds.min()! * 50 / 3600

    case "mpi-step":
        // One MultiDiffusion step at 512x2048 (as panorama-step) in an MPI job: run it under
        // `mpirun -np N … --threads T`, or alone. Rank 0 reports; the others only compute.
        let world = benchmarkWorld
        let model = try StableDiffusionModel(folder: folderURL)
        var pipeline = PanoramaPipeline(model: model)
        pipeline.processes = world.flatMap { $0.size > 1 ? $0 : nil }
        var settings = PanoramaSettings(prompt: "snowy mountains at sunset", width: o.canvasWidth, height: 512)
        settings.seed = 1
        try pipeline.validate(settings)
        var loop = try pipeline.denoisingLoop(settings)
        let timing = TimedDistributor(inner: pipeline.processes.map { GroupDistributor(world: $0) as any WorkDistributor } ?? LocalDistributor())
        loop.distributor = timing
        let warmups = o.warmups ?? 0
        probe = LoadProbe()
        let (sent, received) = (world?.bytesSent ?? 0, world?.bytesReceived ?? 0)
        let seconds = time(warmups: warmups, runs: o.runs ?? 1) { _ = loop.next() }
        let steps = Double(warmups + (o.runs ?? 1))
        let views = loop.views.count
        let flops = unetFlops(model.unet.config, batch: 2, height: 64, width: 64, tokens: 77) * Double(views)
        let ranks = world?.size ?? 1
        result = RowResult(row: row, what: "one MultiDiffusion DDIM step, 512x\(o.canvasWidth), \(views) views, CFG, on \(ranks) process\(ranks == 1 ? "" : "es") x \(o.threads) thread\(o.threads == 1 ? "" : "s")",
                           seconds: seconds, warmups: warmups, gflop: flops.gflop)
        result.extra["processes"] = ranks
        result.extra["threads per process"] = o.threads
        result.extra["views"] = views
        // every rank's UNet time per step, and the time in the gather (its own wait for the
        // slowest rank included), as seen by rank 0
        let computes = (world.map { w in w.allGather(withUnsafeBytes(of: timing.computeSeconds / steps) { Array($0) }) }
            ?? [withUnsafeBytes(of: timing.computeSeconds / steps) { Array($0) }]).map { $0.withUnsafeBytes { $0.load(as: Double.self) } }
        result.extra["UNet seconds per step, slowest process"] = computes.max()!
        result.extra["UNet seconds per step, fastest process"] = computes.min()!
        result.extra["gather seconds per step (rank 0, wait included)"] = (timing.totalSeconds - timing.computeSeconds) / steps
        // cropping, the scheduler's steps and the fusion: what every process repeats
        result.extra["repeated seconds per step"] = seconds.reduce(0, +) / Double(seconds.count) - timing.totalSeconds / steps
        result.extra["bytes sent per step (rank 0)"] = Double((world?.bytesSent ?? 0) - sent) / steps
        result.extra["bytes received per step (rank 0)"] = Double((world?.bytesReceived ?? 0) - received) / steps
        result.extra["prediction bytes per view"] = 4 * model.unet.config.inChannels * 64 * 64
        if let world, world.size > 1 {
            // the same gather alone: what the network costs without waiting for a slower rank
            let share = [UInt8](repeating: 1, count: views * 4 * model.unet.config.inChannels * 64 * 64 / world.size)
            world.barrier()
            let gathers = time(warmups: 1, runs: 5) { _ = world.allGather(share) }
            result.extra["gather alone, seconds (min of 5)"] = gathers.min()!
        }

    case "compose-step":
        // A background and three regions on 512x2048: the sea on the left, mountains on the right,
        // a lighthouse box between. Each window costs one denoise per prompt whose mask touches it.
        let model = try StableDiffusionModel(folder: folderURL)
        let pipeline = PanoramaPipeline(model: model)
        var settings = PanoramaSettings(prompt: "a sunny sky", width: 2048, height: 512)
        settings.seed = 1
        let regions = [
            Region(shape: .rectangle(x: 0, y: 0, width: 768, height: 512), prompt: RegionPrompt(prompt: "a calm sea")),
            Region(shape: .rectangle(x: 900, y: 96, width: 160, height: 320), prompt: RegionPrompt(prompt: "a lighthouse")),
            Region(shape: .rectangle(x: 1280, y: 0, width: 768, height: 512), prompt: RegionPrompt(prompt: "snowy mountains")),
        ]
        try pipeline.validate(settings)
        var loop = try pipeline.regionLoop(settings, composition: Composition(regions: regions, bootstrapSteps: 0))
        let views = loop.views.count, denoises = loop.denoisesPerStep
        let warmups = o.warmups ?? 0
        probe = LoadProbe()
        let seconds = time(warmups: warmups, runs: o.runs ?? 1) { _ = loop.next() }
        let flops = unetFlops(model.unet.config, batch: 2, height: 64, width: 64, tokens: 77) * Double(denoises)
        result = RowResult(row: row, what: "one region-composition DDIM step, 512x2048, 3 regions + background, \(views) views, CFG",
                           seconds: seconds, warmups: warmups, gflop: flops.gflop)
        result.extra["views"] = views
        result.extra["denoises per step"] = denoises
        result.extra["denoises if every prompt ran on every view ((K+1) x views)"] = 4 * views
        result.extra["bound: sum over views of (1 + regions touching the view)"] =
            loop.promptsPerView.reduce(0) { $0 + 1 + $1.filter { $0 > 0 }.count }
        result.extra["most prompts on one view"] = loop.promptsPerView.map(\.count).max() ?? 0

    case "upscale":
        // The whole `panorama upscale` pipeline on an N/2 x N/2 synthetic picture: Lanczos to
        // N x N, tiled encode, img2img noise at strength 0.35 of 6 steps (2 run), MultiDiffusion
        // windows at stride 48, CFG 7.5, tiled decode. Memory is the point: maps above 256 MiB go
        // to temporary files, as bfloat16 when float32 ones would not fit the free disk.
        let side = o.target, half = o.target / 2
        let model = try StableDiffusionModel(folder: folderURL)
        let pipeline = PanoramaPipeline(model: model)
        var settings = PanoramaSettings(prompt: "a detailed photograph", width: side, height: side)
        settings.seed = 1
        settings.steps = 6
        settings.stride = 48
        try pipeline.validate(settings)
        if let format = o.fileFormat { settings.decodeMethod = .tiled(VAETiling(fileFormat: format)) }
        if o.runs == 0 {  // the plan only: temporary files of the encode and the decode in each format
            probe = LoadProbe()
            result = RowResult(row: row, what: "upscale to \(side)x\(side): temporary-file plan only (--runs 0)",
                               seconds: [], warmups: 0, gflop: nil)
            for format in CanvasStore.FileFormat.allCases {
                let tiling = VAETiling(fileFormat: format)
                for encoding in [true, false] {
                    let bytes = model.vae.temporaryFileBytes(height: side, width: side, tiling: tiling, encoding: encoding)
                    result.extra["\(encoding ? "encode" : "decode") \(format.rawValue) files, GiB"] = Double(bytes) / Double(1 << 30)
                }
            }
            break
        }
        let plannedDisk = try pipeline.fitTemporaryFiles(&settings, encoding: true)
        var pixels = [UInt8](repeating: 0, count: half * half * 3)
        for y in 0..<half {
            for x in 0..<half {
                for c in 0..<3 {
                    let v = 128 + 90 * sin(Double(x) / Double(23 + 7 * c)) * cos(Double(y) / 41) + 30 * sin(Double(x + y) / 5)
                    pixels[(y * half + x) * 3 + c] = UInt8(max(0, min(255, v)))
                }
            }
        }
        let source = RGBImage(width: half, height: half, pixels: pixels)
        // With --phase, one phase per process, the latents handed over in files under --state:
        // each phase's peak RSS is then its own, and a long upscale can be measured in parts.
        let phase = o.phase ?? "all"
        let state = o.state ?? benchmarksDirectory.appendingPathComponent(".cache/upscale-\(side)")
        func save(_ latents: Tensor, _ name: String) throws {
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
            try SafeTensorsWriter.write([(name: "latents", tensor: latents)], dtype: .f32, metadata: [:],
                                        to: state.appendingPathComponent(name + ".safetensors"))
        }
        func load(_ name: String) throws -> Tensor {
            try SafeTensorsFile(url: state.appendingPathComponent(name + ".safetensors")).tensor("latents")
        }
        probe = LoadProbe()
        var seconds: [String: Double] = [:]
        var latents: Tensor?
        var t = now()
        func lap(_ what: String) {
            seconds[what] = now() - t
            t = now()
        }
        if phase == "all" || phase == "encode" {
            let image = source.resized(width: side, height: side).tensor()
            lap("resize")
            latents = try pipeline.encode(image, settings)
            lap("encode")
            if phase == "encode" { try save(latents!, "encoded") }
        }
        var views = 0, steps = 0
        if phase == "all" || phase == "denoise" {
            if latents == nil && o.syntheticLatents {
                var generator = TorchGenerator(seed: 2)
                latents = generator.randn([1, 4, side / 8, side / 8])
            }
            var loop = try pipeline.imageToImageLoop(settings, latents: try latents ?? load("encoded"), strength: 0.35)
            views = loop.views.count
            while loop.next() != nil { steps += 1 }
            latents = loop.latents
            lap("denoise")
            if phase == "denoise" { try save(loop.latents, "denoised") }
        }
        var output: RGBImage?
        if phase == "all" || phase == "decode" {
            output = RGBImage(decoded: try pipeline.decode(try latents ?? load("denoised"), circular: false,
                                                         method: settings.decodeMethod))
            lap("decode")
        }
        let total = seconds.values.reduce(0, +)
        result = RowResult(row: row, what: "upscale \(half)x\(half) -> \(side)x\(side)"
                           + (phase == "all" ? "" : ", phase \(phase) only")
                           + ": resize, tiled encode, 2 img2img steps (stride 48, CFG), tiled decode",
                           seconds: [total], warmups: 0, gflop: nil)
        if phase == "all" { result.extra["seconds per megapixel"] = total / (Double(side * side) / 1e6) }
        for (what, s) in seconds { result.extra["\(what) s"] = s }
        if views > 0 {
            result.extra["windows"] = views
            result.extra["steps"] = steps
        }
        result.extra["temporary file peak, GiB"] = Double(CanvasStore.peakFileBytes) / Double(1 << 30)
        result.extra["temporary files planned, GiB"] = Double(plannedDisk) / Double(1 << 30)
        if case .tiled(let tiling) = settings.decodeMethod { result.extra["temporary file format"] = tiling.fileFormat.rawValue }
        if let output {
            result.extra["output mean level"] = Double(output.pixels.reduce(0) { $0 + Int($1) }) / Double(output.pixels.count)
        }

    case "preview":
        // What --preview costs a step: the linear map's picture of a 2048x512 canvas enlarged x8,
        // PNG-encoded and written atomically, against one CFG UNet call (a 512x512 step; a
        // 2048x512 MultiDiffusion step is 25 of them) measured in the same process.
        let vae = try AutoencoderKL(config: folder.config(AutoencoderKLConfig.self, for: "vae"),
                                    weights: folder.weights(for: "vae"))
        let fitStart = Date()
        let preview = LatentPreview.fit(vae)
        let fitSeconds = Date().timeIntervalSince(fitStart)
        let latents = generator.randn([1, 4, 64, 256])
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("panorama-preview-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let target = scratch.appendingPathComponent("live.png")
        let warmups = o.warmups ?? 1
        probe = LoadProbe()
        let seconds = try time(warmups: warmups, runs: o.runs ?? 5) {
            let image = preview.image(latents, upscale: .bilinear())
            // as --preview writes it: PNG.write renames its temporary file into place
            try PNG.write(RGBImage(width: image.width, height: image.height, pixels: image.pixels), to: target)
        }
        let mapSeconds = time(warmups: 1, runs: 3) { _ = preview.image(latents, upscale: .bilinear()) }.min()!
        let unet = try UNet2DConditionModel(config: folder.config(UNetConfig.self, for: "unet"),
                                            weights: folder.weights(for: "unet"))
        let sample = generator.randn([2, 4, 64, 64]), context = generator.randn([2, 77, 768])
        _ = unet(sample, timestep: 981, encoderHiddenStates: context)
        let unetSeconds = time(warmups: 0, runs: 1) { _ = unet(sample, timestep: 981, encoderHiddenStates: context) }[0]
        result = RowResult(row: row, what: "--preview of a 2048x512 canvas (linear map, x8 bilinear, PNG, atomic write) vs one CFG UNet call",
                           seconds: seconds, warmups: warmups, gflop: nil)
        result.extra["fit seconds (once per VAE)"] = fitSeconds
        result.extra["map + enlarge seconds"] = mapSeconds
        result.extra["UNet call seconds (a 512x512 step)"] = unetSeconds
        result.extra["% of a 512x512 step"] = 100 * seconds.min()! / unetSeconds
        result.extra["% of a 2048x512 step (25 views)"] = 100 * seconds.min()! / (25 * unetSeconds)
        result.extra["PNG bytes"] = (try? FileManager.default.attributesOfItem(atPath: target.path)[.size] as? Int) ?? 0

    case "lcm-512", "lcm-4096", "lcm-4096-taesd":
        // A few-step render end to end, as `panorama --lora lcm.safetensors --scheduler lcm --steps 4
        // --guidance 1 [--spot] [--taesd DIR]` runs it after loading: text encoding, the denoising
        // loop (one UNet call per window and step, no CFG pair) and the decode (the tiled VAE, or
        // the tiny autoencoder). The LCM-LoRA-shaped LoRA is merged at load; load and the first UNet
        // call (which caches each layer's transformed weights) are not timed.
        let wide = row != "lcm-512", taesd = row.hasSuffix("-taesd")
        let loraURL = try RandomWeights.ensureLCMShapedLoRA(cache: o.cache, unet: folder.weights(for: "unet"))
        let model = try StableDiffusionModel(folder: folderURL, loras: [LoRAApplication(lora: try LoRA(url: loraURL))])
        var pipeline = PanoramaPipeline(model: model)
        if taesd { pipeline.autoencoder = try AutoencoderTiny(contentsOf: RandomWeights.ensureTAESD(cache: o.cache, layout: o.layout)) }
        var settings = PanoramaSettings(prompt: "snowy mountains at sunset", width: wide ? 4096 : 512, height: 512)
        settings.sampler = .lcm
        settings.steps = 4
        settings.guidanceScale = 1
        settings.seed = 1
        settings.spotDiffusion = wide
        try pipeline.validate(settings)
        let disk = try pipeline.fitTemporaryFiles(&settings)  // as the command line decides
        _ = model.unet(generator.randn([1, 4, 64, 64]), timestep: 999, encoderHiddenStates: generator.randn([1, 77, 768]))
        probe = LoadProbe()
        var phases: [String: [Double]] = [:], windows = 0
        let warmups = o.warmups ?? 0
        let seconds = try time(warmups: warmups, runs: o.runs ?? 1) {
            var t = now()
            func lap(_ what: String) {
                phases[what, default: []].append(now() - t)
                t = now()
            }
            var loop = try pipeline.denoisingLoop(settings)  // encodes the prompt
            lap("text encoding")
            windows = 0
            while let report = loop.next() { windows += report.views }
            lap("denoise")
            let image = RGBImage(decoded: try pipeline.decode(loop.latents, circular: false, method: settings.decodeMethod))
            lap("decode")
            precondition(image.width == settings.width)
        }
        let calls = Double(windows)
        let flops = unetFlops(model.unet.config, batch: 1, height: 64, width: 64, tokens: 77) * calls
        result = RowResult(row: row, what: "\(settings.width)x512, LCM 4 steps, guidance 1 (no CFG), "
                           + (wide ? "SpotDiffusion windows, " : "") + (taesd ? "TAESD decode" : "tiled VAE decode")
                           + ", LCM-LoRA-shaped LoRA merged (load excluded)",
                           seconds: seconds, warmups: warmups, gflop: flops.gflop)
        result.extra["UNet calls (batch 1)"] = windows
        if !taesd { result.extra["VAE temporary files, GiB (0: maps in memory)"] = Double(disk) / Double(1 << 30) }
        for (what, list) in phases { result.extra["\(what) s (min)"] = list.min()! }

    case "load", "load-lora":
        // load-lora: an LCM-LoRA-shaped kohya file (rank 64, alpha 64, fp16, every module kind LCM-LoRA
        // for SD 1.5 has) merged at load; the cost a LoRA adds is its open time minus the `load` row's.
        let loraURL = row == "load-lora" ? try RandomWeights.ensureLCMShapedLoRA(cache: o.cache, unet: folder.weights(for: "unet")) : nil
        if o.cold { evictFromPageCache(folderURL) }
        probe = LoadProbe()
        let t0 = now()
        var t1 = t0, modules = 0
        let model: StableDiffusionModel
        do {
            // the LoRA's tensors are freed once merged, as the command line frees them
            let loras = try loraURL.map { [LoRAApplication(lora: try LoRA(url: $0))] } ?? []
            (t1, modules) = (now(), loras.first?.lora.modules.count ?? 0)
            model = try StableDiffusionModel(folder: folderURL, loras: loras)
        }
        let t2 = now()
        let rssAfterLoad = procStatusBytes("VmRSS")
        let sample = generator.randn([2, 4, 64, 64]), context = generator.randn([2, 77, 768])
        _ = model.unet(sample, timestep: 981, encoderHiddenStates: context)
        let t3 = now()
        _ = model.unet(sample, timestep: 981, encoderHiddenStates: context)
        let t4 = now()
        let what = loraURL == nil ? "StableDiffusionModel(folder:) on the fp16 folder + first CFG UNet call"
            : "LoRA file read + StableDiffusionModel(folder:loras:) merging it (\(modules) modules, rank 64) + first CFG UNet call"
        result = RowResult(row: row, what: what + (o.cold ? " (weights evicted from the page cache first)" : " (weights in the page cache)"),
                           seconds: [t3 - t0], warmups: 0, gflop: nil)
        if loraURL == nil {
            result.extra["open seconds"] = t2 - t0
        } else {
            result.extra["LoRA read seconds"] = t1 - t0
            result.extra["open with merge seconds"] = t2 - t1
        }
        result.extra["first UNet call seconds"] = t3 - t2
        result.extra["second UNet call seconds"] = t4 - t3
        result.extra["RSS after open, GiB"] = Double(rssAfterLoad) / Double(1 << 30)

    default:
        throw BenchmarkError("unknown row \(row); rows: \(rowNames.joined(separator: ", ")), all")
    }
    (result.otherLoadCores, result.stealCores) = probe.finish()
    result.extra["OpenBLAS kernels"] = Compute.blasCoreName
    result.extra["fp32 GEMM"] = Compute.ownFloat32GEMM ? "own AVX-512" : "OpenBLAS"
    if row != "sgemm" {
        result.extra["precision"] = o.precision.rawValue
        if o.precision == .fp32 && !o.winograd { result.extra["winograd"] = "off" }
        if let block = o.attentionKeyBlock { result.extra["attention key block"] = Double(block) }
        result.sgemmGflops = sgemmRate
    }
    result.peakRSS = procStatusBytes("VmHWM")
    return result
}

/// Drops the folder's weight files from the page cache (posix_fadvise DONTNEED), for a cold load.
func evictFromPageCache(_ folder: URL) {
    for (component, file) in RandomWeights.components {
        let path = folder.appendingPathComponent(component).appendingPathComponent(file).path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { continue }
        fdatasync(fd)
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        close(fd)
    }
}

/// The MPI job this benchmark process is part of (started once), or nil when not launched by mpirun.
let benchmarkWorld: MPI? = MPI.launched() ? (try? MPI.start()) : nil

/// A distributor that times the UNet batches it runs here (`computeSeconds`) and the whole of
/// each distribution (`totalSeconds`: the batches, the wait for the slowest process, the gather).
final class TimedDistributor: WorkDistributor, @unchecked Sendable {
    let inner: any WorkDistributor
    private(set) var computeSeconds = 0.0, totalSeconds = 0.0

    init(inner: any WorkDistributor) { self.inner = inner }

    func distribute(costs: [Int], _ work: (Int) -> [Tensor], use: (Int, [Tensor]) -> Void) {
        let start = Date()
        var used = 0.0
        inner.distribute(costs: costs, { i in
            let t = Date()
            defer { computeSeconds += Date().timeIntervalSince(t) }
            return work(i)
        }, use: { i, result in
            let t = Date()
            use(i, result)
            used += Date().timeIntervalSince(t)
        })
        // the scheduler's steps and the fusion (in `use`) are the repeated work, not the distribution's
        totalSeconds += Date().timeIntervalSince(start) - used
    }
}
