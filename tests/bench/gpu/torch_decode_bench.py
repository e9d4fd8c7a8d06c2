#!/usr/bin/env python3
"""PyTorch baseline for gpu_decode_bench: the same 8B-shaped map (32 x 14336 rows, hidden 4096,
vocab 128256, random bf16 weights made on the device), chunked: RMS norm, bf16 GEMM, .float()
logits, logsumexp, topk 20, probabilities, results to the host. Timed with torch.cuda.synchronize.
Also times the bf16 GEMM alone on the same chunks. Prints "SKIPPED (no CUDA device)" without one.
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--neurons", type=int, default=14336)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--chunk-rows", type=int, default=2048)
    ap.add_argument("--fp32-gemm", action="store_true", help="fp32 GEMM (the paper's setting)")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("SKIPPED (no torch)")
        return 0
    if not torch.cuda.is_available():
        print("SKIPPED (no CUDA device)")
        return 0

    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device=dev).manual_seed(0)
    V, H, L, N, K = args.vocab, args.hidden, args.layers, args.neurons, args.top_k
    w = (torch.rand(V, H, device=dev, generator=g) * 0.07 - 0.035).to(torch.bfloat16)
    x = (torch.rand(L * N, H, device=dev, generator=g) * 2 - 1).to(torch.bfloat16)
    gamma = torch.linspace(0.8, 1.2, H, device=dev)
    if args.fp32_gemm:
        w = w.float()
    chunks = [(l * N + c, min(args.chunk_rows, N - c)) for l in range(L) for c in range(0, N, args.chunk_rows)]

    def decode(r0, n):
        xc = x[r0:r0 + n].float()
        xn = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + 1e-5) * gamma
        logits = (xn.to(w.dtype) @ w.T).float()
        lse = torch.logsumexp(logits, dim=-1)
        vals, ids = torch.topk(logits, K, dim=-1)
        probs = torch.exp(vals - lse[:, None])
        return ids.cpu(), vals.cpu(), probs.cpu(), lse.cpu()

    decode(*chunks[0])  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for r0, n in chunks:
        decode(r0, n)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0

    xs = x.to(w.dtype)
    _ = xs[: chunks[0][1]] @ w.T
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for r0, n in chunks:
        _ = xs[r0:r0 + n] @ w.T
    torch.cuda.synchronize()
    gemm = time.perf_counter() - t0

    rows = L * N
    dtype = "fp32" if args.fp32_gemm else "bf16"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"torch pipeline ({dtype} GEMM, chunk {args.chunk_rows}): {total:.3f} s, {rows / total:.0f} rows/s")
    print(f"torch GEMM alone ({dtype} out):            {gemm:.3f} s")
    print("RESULT " + json.dumps({"device": torch.cuda.get_device_name(), "gemm_dtype": dtype,
                                  "chunk_rows": args.chunk_rows, "total_s": round(total, 4),
                                  "gemm_s": round(gemm, 4), "rows_per_s": round(rows / total)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
