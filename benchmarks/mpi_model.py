"""The speed-up of an MPI job (`mpirun -np N panorama ...`) over one process, modelled from
measured compute and communication (benchmarks/README.md, "MPI").

A step of MultiDiffusion with N processes costs
    T(N) = ceil(W / N) * t_window + W * t_replicated + T_gather(N)
where W is the number of windows, t_window the seconds of one window's CFG UNet batch on one
process (one machine's cores), t_replicated what every process repeats each step per window
(cropping, the scheduler's step, the fusion), and T_gather a ring allgather of every window's prediction (b bytes each):
    T_gather(N) = (N - 1) * latency + (N - 1) / N * W * b / bandwidth.
Usage: python3 benchmarks/mpi_model.py T_WINDOW T_REPLICATED_PER_WINDOW [BYTES_PER_WINDOW]
"""
import math
import sys

NETWORKS = {"10 GbE (1.1 GB/s, 50 us)": (1.1e9, 50e-6), "100 Gb/s InfiniBand (11 GB/s, 2 us)": (11e9, 2e-6)}
# name, latent width, latent height; SD windows of 64 latent pixels at stride 8
CANVASES = [("2048x512", 256, 64), ("4096x512", 512, 64), ("16384x2048", 2048, 256)]


def windows(size, window=64, stride=8):
    if size <= window:
        return 1
    n = (size - window) // stride + 1
    return n + (1 if (size - window) % stride else 0)


def main():
    t_window = float(sys.argv[1])
    t_replicated = float(sys.argv[2])
    b = int(sys.argv[3]) if len(sys.argv) > 3 else 4 * 4 * 64 * 64
    for network, (bandwidth, latency) in NETWORKS.items():
        print(f"\n{network}; a window {t_window:.2f} s, repeated work {1000 * t_replicated:.2f} ms a window, {b} B a window\n")
        print("| canvas | windows | MiB gathered a step | N | step s | gather s | speed-up | efficiency |")
        print("|---|---|---|---|---|---|---|---|")
        for name, w, h in CANVASES:
            count = windows(w) * windows(h)
            one = count * (t_window + t_replicated)
            for n in (1, 8, 32, 128):
                gather = 0 if n == 1 else (n - 1) * latency + (n - 1) / n * count * b / bandwidth
                step = math.ceil(count / n) * t_window + count * t_replicated + gather
                print(f"| {name} | {count} | {count * b / 2**20:.1f} | {n} | {step:.2f} | {gather:.3f} | "
                      f"{one / step:.1f} | {one / step / n:.0%} |")


if __name__ == "__main__":
    main()
