// Host launchers of the CUDA forward pass's kernels (forward_kernels.cu). Every activation is
// fp32 on the device; weights keep their checkpoint dtype. The linear layers themselves are
// cuBLAS GEMMs (gpu::gemm_logits in gpu/gemm.h) of a split input: the fp32 rows
// x = hi + lo, both rounded to the weight dtype and stacked as [2 rows, k] (hi rows first), so
// one GEMM gives y2 [2 rows, n] and launch_add_halves sums the two halves. fp32 weights: no
// split, [rows, k] and y2 [rows, n]. Every launcher checks the launch (cudaGetLastError).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "forward/clamp.h"
#include "forward/ops.h"
#include "io/safetensors.h"

namespace fi::gpu {

// Most head_dim the attention kernel takes (the query vector sits in shared memory).
constexpr int64_t kMaxHeadDim = 512;

// x[t, h] = float(table[ids[t], h]) * scale. table: [vocab, H] of dtype; ids: [T] (device).
void launch_embed(const void* table, DType dtype, const int32_t* ids, int64_t T, int64_t H,
                  float scale, float* x, cudaStream_t stream);

// out[r, j] = (accumulate ? out[r, j] : 0) + (y[r, j] + y[rows + r, j] + bias[j]) for r < rows,
// j < n. y: [rows, n] fp32, or [2 rows, n] when split (the hi half then the lo half); bias: [n]
// or null; out: row stride ldo. out may be y itself (ldo = n): each element is read, then
// written, by the same thread.
void launch_add_halves(const float* y, int64_t rows, int64_t n, bool split, const float* bias,
                       float* out, int64_t ldo, bool accumulate, cudaStream_t stream);

// Rotary embedding of the new positions pos..pos+T-1 and their append to the KV cache.
// qkv: [T, (nh + 2 nkv) hd] fp32, per row q heads, k heads, v heads; the q heads are rotated in
// place, the rotated k heads and the v heads are written to rows pos+t of k_cache, v_cache
// ([>= pos + T, nkv hd] fp32). cos, sin: [T, hd/2] fp32 (angle (pos + t) · inv_freq[i]).
void launch_rope_cache(float* qkv, int64_t T, int64_t nh, int64_t nkv, int64_t hd,
                       const float* cos, const float* sin, float* k_cache, float* v_cache,
                       int64_t pos, cudaStream_t stream);

// RMSNorm of segments of fp32 rows, as the CPU stage's (model/rms_norm.h; kernel in
// rms_norm_kernel.cuh): for r < rows and s < segs, the n values at in + r·ld_in + s·n, normed by
// gamma [n] fp32 (g = 1 + gamma when plus_one), are written to out + r·ld_out + s·n, or added to
// what is there when accumulate. out may be in (same ld). The q/k norms: in = out = the q (or k)
// columns of qkv, n = head_dim (per head) or the whole width; the post-norms: in = a block's
// output [rows, H], out = x, accumulate.
void launch_rms_norm(const float* in, int64_t ld_in, float* out, int64_t ld_out, int64_t rows,
                     int64_t n, int64_t segs, const float* gamma, bool plus_one, double eps,
                     bool accumulate, cudaStream_t stream);

// Causal grouped-query attention of the T new queries: query t (position pos + t) sees cache
// rows pos+t-window+1..pos+t (window > 0: a sliding layer) or 0..pos+t (window 0); scores
// q·k · scale, soft-capped to tanh(s / cap) · cap when cap > 0 (Gemma 2). q: [T, ldq] fp32
// (head h at columns h hd..), k_cache: [>= pos + T, nkv hd], v_cache: [>= pos + T, nkv vd];
// out: [T, nh vd] fp32 (vd = hd but for MLA). hd, vd <= kMaxHeadDim, nh a multiple of nkv.
void launch_attention(const float* q, int64_t ldq, const float* k_cache, const float* v_cache,
                      int64_t T, int64_t nh, int64_t nkv, int64_t hd, int64_t vd, int64_t pos,
                      float scale, int64_t window, float cap, float* out, cudaStream_t stream);

// SwiGLU of the gate_up GEMM's output into the down GEMM's input: h = act(gate) * up, where
// y: [rows, 2I] fp32 (gate columns 0..I, up columns I..2I), or [2 rows, 2I] when split_in.
// h: [rows, I] of out_dtype (hi); for a 16-bit out_dtype the rounding remainder (lo) follows
// at h + rows · I elements.
void launch_swiglu(const float* y, int64_t rows, int64_t I, bool split_in, Act act, void* h,
                   DType out_dtype, cudaStream_t stream);

// The clamp hooks on the down GEMM's input written by launch_swiglu (same y, h, layout):
// for each of the n clamps (neurons [n] int32, values [n] fp32, device; no neuron twice) and
// rows row0..row0+nrows-1 of the rows (nrows < 0: to the last; a batch clamps each sequence's
// rows apart): site Up: h = act(gate) * value; site Act: h = value. Nothing for n = 0.
void launch_clamps(const float* y, int64_t rows, int64_t I, bool split_in, Act act,
                   const int32_t* neurons, const float* values, int64_t n, ClampSite site,
                   void* h, DType out_dtype, cudaStream_t stream, int64_t row0 = 0,
                   int64_t nrows = -1);

// Mixture of experts (kernels in moe_kernels.cuh): out[i, :] = in[idx[i], :] for i < n, rows of
// H fp32 (an expert's tokens gathered); idx: [n] int32 (device).
void launch_gather_rows(const float* in, int64_t H, const int32_t* idx, int64_t n, float* out,
                        cudaStream_t stream);

// out[idx[i], :] += w[i] · y[i, :] for i < n: an expert's output, y = the down GEMM's [n, H] or
// [2 n, H] when split (its halves summed first), weighted and added to its tokens' rows (row
// stride ldo). idx [n] int32, w [n] fp32 (device); no index twice.
void launch_scatter_add(const float* y, int64_t n, int64_t H, bool split, const int32_t* idx,
                        const float* w, float* out, int64_t ldo, cudaStream_t stream);

// DeepSeek's MLA for the T new positions: q [T, nh (nope + rope)], kva [T, kvr + rope] (the
// latent, then the RoPE key shared by the heads), kvb [T, nh (nope + vd)] (per head k_nope, v);
// cos, sin [T, rope / 2]. Writes qr [T, nh (nope + rope)] (the rope parts rotated, their pairs
// de-interleaved first where interleave), and rows pos..pos+T-1 of k_cache [nh (nope + rope)]
// (per head [k_nope | the rotated shared key]) and v_cache [nh vd].
void launch_mla_rope_cache(const float* q, const float* kva, const float* kvb, const float* cos,
                           const float* sin, int64_t T, int64_t nh, int64_t nope, int64_t rope,
                           int64_t vd, int64_t kvr, bool interleave, float* qr, float* k_cache,
                           float* v_cache, int64_t pos, cudaStream_t stream);

}  // namespace fi::gpu
