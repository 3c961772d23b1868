"""The matmul peak the benchmarks report shares of: GFLOP/s of this CPU's matrix products at given shapes, measured now."""
import time
import torch


def matmul_gflops(shapes, # (m, k, n) of each product [m, k] @ [k, n]
                  dtype=torch.bfloat16, reps:int=3) -> float:
    "Best-of-`reps` GFLOP/s of the products `shapes` in `dtype` (one warm-up pass first)."
    mats = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in shapes]
    for a, b in mats: a @ b
    best = float('inf')
    for _ in range(reps):
        t = time.perf_counter()
        for a, b in mats: a @ b
        best = min(best, time.perf_counter() - t)
    return sum(2 * m * k * n for m, k, n in shapes) / best / 1e9
