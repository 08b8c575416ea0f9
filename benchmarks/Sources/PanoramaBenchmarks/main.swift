import Foundation
import Tensors
#if canImport(Glibc)
import Glibc
#endif

/// `panorama-benchmarks ROW… [options]`: times SD 1.5-sized components with seeded random
/// weights. `all` runs every row in a fresh process of its own, so each peak RSS is clean.
let usage = """
    usage: panorama-benchmarks ROW... [--json] [--runs N] [--warmups N] [--threads N]
                               [--cache DIR] [--layout DIR] [--sgemm-gflops X] [--skip-4096] [--cold]
                               [--precision fp32|bf16] [--no-winograd] [--attention-key-block N]
                               [--file-format float32|bfloat16]
                               [--target N] [--canvas-width N] [--phase encode|denoise|decode] [--state DIR]
                               [--synthetic-latents] [--fp32-gemm own|openblas]
    rows: \(rowNames.joined(separator: ", ")), all (every row but upscale, vae-decode-journal, mpi-step and mpi-decode); `flops` prints the counted FLOPs only
      --json           print JSON (one object per row, an array for several rows) instead of a table
      --runs/--warmups timed and untimed repetitions (defaults per row: unet 3+1, vae-decode-512 3+1,
                       vae-decode-4096 1+0, the -tiled decodes as their whole-image rows, text-encoder 10+1, panorama-step 1+0, compose-step 1+0, load 1, sgemm 5+1,
                       unet-layers / vae-layers 2+1)
      --cache DIR      the random-weight folder (default benchmarks/.cache/sd15-random; written if absent)
      --layout DIR     configs + tensor listing (default benchmarks/sd15)
      --sgemm-gflops X use X as the ceiling instead of measuring sgemm in each row's process
      --skip-4096      leave vae-decode-4096 out of `all`
      --cold           `load`: evict the weight files from the page cache first
      --target N       `upscale`: side of the square result (default 2048; multiple of 64);
                       with --runs 0 it only prints the plan of temporary files
      --phase P        `upscale`: run only encode, denoise or decode, handing latents over in
      --state DIR      files under DIR (default benchmarks/.cache/upscale-N), so a long upscale
                       can be measured phase by phase, each with its own peak RSS
      --synthetic-latents
                       `upscale --phase denoise`: seeded Gaussian latents instead of the encode
                       phase's file (the denoise's cost does not depend on the values)
      --precision P    fp32 (default) or bf16: the arithmetic of the models' matrix products
                       (`sgemm` then also times the own bf16 GEMM on the same shapes)
      --fp32-gemm G    float32 products on the own AVX-512 GEMM (`own`, the default where the CPU
                       has AVX-512) or on OpenBLAS (`openblas`); the sgemm ceiling is always
                       OpenBLAS's, and `sgemm` also times the own kernel on the same shapes
      --no-winograd    fp32: 3x3 convolutions by im2col + GEMM instead of Winograd F(4x4, 3x3)
      --attention-key-block N
                       keys per block of attention's online softmax (0: every row's scores whole;
                       default: 256 at fp32, 512 at bf16)
      --file-format F  the -tiled decodes and `upscale`: temporary files as float32 or bfloat16
      --memory-limit M the -tiled decodes: maps of at most M MiB stay in memory (default VAETiling's)
                       (default: the tiled VAE's own choice, float32 unless the disk is too small)
      --canvas-width N `mpi-step`, `mpi-decode`: canvas width in pixels, height 512 (default 2048)
      --latent-width N `vae-layers`: latent width (64: the 512x512 decode; 512: the 512x4096 one)
      --only KIND      `unet-layers`/`vae-layers`: replay only conv, linear, attention, groupnorm or layernorm
      --verbose        `unet-layers`/`vae-layers`: print every layer's time to standard error
    """

/// benchmarks/, found from this source file's location.
let benchmarksDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

func parse(_ arguments: [String]) throws -> (rows: [String], options: Options) {
    var o = Options(cache: benchmarksDirectory.appendingPathComponent(".cache/sd15-random"),
                    layout: benchmarksDirectory.appendingPathComponent("sd15"))
    var rows: [String] = []
    var i = 0
    func value() throws -> String {
        i += 1
        guard i < arguments.count else { throw BenchmarkError("\(arguments[i - 1]) needs a value") }
        return arguments[i]
    }
    func int() throws -> Int {
        let v = try value()
        guard let n = Int(v), n >= 0 else { throw BenchmarkError("\(arguments[i - 1]): bad number \(v)") }
        return n
    }
    while i < arguments.count {
        switch arguments[i] {
        case "--json": o.json = true
        case "--runs": o.runs = max(0, try int())
        case "--warmups": o.warmups = try int()
        case "--threads": o.threads = max(1, try int())
        case "--cache": o.cache = URL(fileURLWithPath: try value())
        case "--layout": o.layout = URL(fileURLWithPath: try value())
        case "--sgemm-gflops":
            let v = try value()
            guard let x = Double(v), x > 0 else { throw BenchmarkError("--sgemm-gflops: bad number \(v)") }
            o.sgemmGflops = x
        case "--skip-4096": o.skip4096 = true
        case "--cold": o.cold = true
        case "--no-winograd": o.winograd = false
        case "--attention-key-block": o.attentionKeyBlock = try int()
        case "--phase":
            let v = try value()
            guard ["encode", "denoise", "decode"].contains(v) else { throw BenchmarkError("--phase: encode, denoise or decode, not \(v)") }
            o.phase = v
        case "--state": o.state = URL(fileURLWithPath: try value())
        case "--synthetic-latents": o.syntheticLatents = true
        case "--fp32-gemm":
            let v = try value()
            guard ["own", "openblas"].contains(v) else { throw BenchmarkError("--fp32-gemm: own or openblas, not \(v)") }
            o.ownFloat32GEMM = v == "own"
        case "--file-format":
            let v = try value()
            guard let f = CanvasStore.FileFormat(rawValue: v) else { throw BenchmarkError("--file-format: float32 or bfloat16, not \(v)") }
            o.fileFormat = f
        case "--memory-limit": o.memoryLimit = max(0, try int()) << 20
        case "--target": o.target = max(512, try int() / 64 * 64)
        case "--canvas-width": o.canvasWidth = max(512, try int() / 64 * 64)
        case "--precision":
            let v = try value()
            guard let p = Precision(rawValue: v) else { throw BenchmarkError("--precision: fp32 or bf16, not \(v)") }
            o.precision = p
        case "--latent-width": o.latentWidth = max(8, try int())
        case "--only": o.only = try value()
        case "--verbose": o.verbose = true
        case "-h", "--help": print(usage); exit(0)
        case let row where rowNames.contains(row) || row == "all" || row == "flops": rows.append(row)
        default: throw BenchmarkError("unknown argument \(arguments[i])\n\(usage)")
        }
        i += 1
    }
    if rows.isEmpty { throw BenchmarkError(usage) }
    return (rows, o)
}

/// Runs `row` in a child process of this executable with `--json` and reads its result.
func runInChild(_ row: String, passing arguments: [String]) throws -> RowResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
    process.arguments = [row, "--json"] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0,
          let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
          let result = RowResult(json: object) else {
        throw BenchmarkError("row \(row) failed (exit status \(process.terminationStatus))")
    }
    return result
}

do {
    let (rows, options) = try parse(Array(CommandLine.arguments.dropFirst()))
    var results: [RowResult] = []
    if rows == ["flops"] {
        print(flopReport(layout: options.layout))
    } else if rows == ["all"] || rows.count > 1 {
        // Several rows: one fresh process each, with the options passed through.
        let expanded = rows.flatMap { $0 == "all" ? rowNames.filter { !(options.skip4096 && $0.hasPrefix("vae-decode-4096")) && $0 != "upscale" && $0 != "vae-decode-journal" && $0 != "mpi-step" && $0 != "mpi-decode" } : [$0] }
        let passed = Array(CommandLine.arguments.dropFirst()).filter { !rowNames.contains($0) && $0 != "all" && $0 != "--json" }
        _ = try RandomWeights.ensure(cache: options.cache, layout: options.layout)
        for row in expanded {
            log("[\(row)]")
            results.append(try runInChild(row, passing: passed))
        }
        if options.json { print(jsonText(results.map(\.json))) } else { print(table(results)) }
    } else {
        let result = try runRow(rows[0], options)
        // in an MPI job rank 0 reports
        if benchmarkWorld?.isPrimary ?? true {
            if options.json { print(jsonText(result.json)) } else { print(table([result])) }
        }
        benchmarkWorld?.finalize()
    }
} catch {
    log("panorama-benchmarks: \(error)")
    exit(1)
}
