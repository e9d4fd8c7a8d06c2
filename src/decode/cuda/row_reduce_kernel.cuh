// The fused per-row reduction kernel over a logits chunk: exact log-sum-exp, top-k and bottom-k,
// the entropy and the rank-1 margin (fi::RowReducer::entropy/margin) in one read of the logits. It must match fi::reduce_row_naive (src/decode/topk.cpp) exactly on
// ids and logits (ties: lower token id first; NaN never ranks but poisons the lse).
// Included by row_reduce.cu (nvcc) and, unchanged, by tests/cuda/reduce_emulated.cpp, which runs
// it on CPU threads through a small emulation of the CUDA device API. So this file includes no
// CUDA header and uses only: threadIdx/blockIdx, __syncthreads, __ballot_sync, __shfl_sync,
// __shfl_xor_sync, __ffs, __popc, atomicAdd on shared memory, __ldcs, __expf, expf, logf, isnan,
// min, and one extern __shared__ array. Needs RowOutputs (kernels.h) declared first.
// With the token index on, the same pass marks the tokens that may enter their index list
// (token_index_kernel.cuh, TokenMarks), so the index kernel need not read the logits again.
#pragma once
#include <climits>
#include <cmath>
#include <cstdint>

#include "decode/cuda/token_index_kernel.cuh"

namespace fi::gpu {
namespace reduce_detail {
namespace {  // internal linkage: the emulated test compiles this file a second time

constexpr int kThreads = 256;             // one block per row
constexpr int kItems = 4;                 // tokens per thread per tile (loads in flight)
constexpr int kTile = kThreads * kItems;  // tokens per tile
constexpr int kWarps = kThreads / 32;
constexpr int kSentinelId = INT_MAX;      // pads a sort; ranks after every real token
constexpr unsigned kFullMask = 0xffffffffu;

// Keys: the logit for top-k, minus the logit for bottom-k, so both select "highest key first,
// then lower id": one comparison rule, one code path.
__device__ __forceinline__ bool ranks_before(float ka, int ia, float kb, int ib) {
  return ka > kb || (ka == kb && ia < ib);
}

// The candidate set of one selection (top or bottom) in shared memory.
struct Selector {
  float* key;  // [cap]
  int* id;     // [cap]
  int cap;     // a power of two >= k + kTile, so one tile never overflows it after a flush
  int k;
};

// The block's shared scalars; they sit at the start of the dynamic shared memory.
struct BlockState {
  int count[2];    // candidates held by selector 0 (top) and 1 (bottom)
  int full[2];     // 1 once a flush kept k candidates: theta is then the k-th best key
  float theta[2];  // a token enters only if its key > theta (ids only grow, so == never wins)
  float warp_m[kWarps], warp_s[kWarps], warp_t[kWarps];
  float lse, entropy;
  float lb_m[kWarps], lb_s[kWarps];  // token marks: the warps' running (max, sum) every kLbTiles
  float lb;                          // token marks: a lower bound on the row's final lse
};
// Token marks: the block's bound is refreshed after tiles 0, 1, 3, 7, then every kLbTiles.
constexpr int kLbTiles = 8;
__device__ __forceinline__ bool refresh_tile(int tile) {
  return tile < kLbTiles ? (tile & (tile + 1)) == 0 : tile % kLbTiles == kLbTiles - 1;
}
constexpr int kStateBytes = (int(sizeof(BlockState)) + 15) / 16 * 16;

// The top selection keeps at least two (the margin needs the second best) when k > 0.
__host__ __device__ inline int top_keep(int k) { return k > 0 && k < 2 ? 2 : k; }

// Candidate buffer capacity for a selection of k (0 when unused).
__host__ __device__ inline int candidate_cap(int k) {
  if (k <= 0) return 0;
  int cap = 1;
  while (cap < k + kTile) cap <<= 1;
  return cap;
}

// Dynamic shared memory of one block: the state, then key[cap_top], id[cap_top], key[cap_bot],
// id[cap_bot].
inline size_t smem_bytes(int k, int b) {
  return size_t(kStateBytes) + size_t(candidate_cap(top_keep(k)) + candidate_cap(b)) * 8;
}

// Streaming log-sum-exp state (m, s, t): lse = m + log(s), and t = sum e^(x-m)·(x-m) for the
// entropy, H = log(s) - t/s (t follows the reference point m as s does). -inf entries add
// nothing; NaN makes s and t NaN.
// __expf (ex2.approx) is accurate to a few 1e-7 relative here, far inside the 1e-3 contract.
__device__ __forceinline__ void lse_add(float& m, float& s, float& t, float x) {
  if (x > m) {
    if (m == -INFINITY) {  // s, t are 0, or NaN (an earlier NaN) to keep
      t = t * 0.f;
      s = s * 0.f + 1.f;
    } else {
      const float d = m - x, e = __expf(d);
      t = (t + d * s) * e;  // the new token adds e^0 · 0
      s = s * e + 1.f;
    }
    m = x;
  } else if (x != -INFINITY) {
    const float d = x - m, e = __expf(d);  // NaN x: s and t become NaN, as in the reference
    s += e;
    t += e * d;
  }
}

__device__ __forceinline__ void lse_merge(float& m, float& s, float& t, float m2, float s2, float t2) {
  if (m2 > m) {
    if (m == -INFINITY) {  // s, t are 0 (or NaN to pass on)
      s += s2;
      t += t2;
    } else {
      const float d = m - m2, e = expf(d);
      t = t2 + (t + d * s) * e;
      s = s2 + s * e;
    }
    m = m2;
  } else if (m2 != -INFINITY) {
    const float d = m2 - m, e = expf(d);
    t += (t2 + d * s2) * e;
    s += s2 * e;
  } else {
    s += s2;  // s2 is 0, or NaN to pass on
    t += t2;
  }
}

// Appends (key, id) for the lanes whose `take` is set, one shared atomic per warp.
// Called by all 32 lanes of a warp together.
__device__ __forceinline__ void append(const Selector& sel, int* count, bool take, float key,
                                       int id) {
  const unsigned mask = __ballot_sync(kFullMask, take);
  if (mask == 0) return;
  const int lane = threadIdx.x & 31;
  const int leader = __ffs(mask) - 1;
  int base = 0;
  if (lane == leader) base = atomicAdd(count, __popc(mask));
  base = __shfl_sync(kFullMask, base, leader);
  if (take) {
    const int pos = base + __popc(mask & ((1u << lane) - 1u));
    sel.key[pos] = key;
    sel.id[pos] = id;
  }
}

// Bitonic sort of key/id[0, n), best first; n a power of two. All threads of the block call it;
// it ends on a barrier (or does nothing for n < 2).
__device__ void bitonic_sort(float* key, int* id, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n / 2; i += kThreads) {
        const int lo = 2 * i - (i & (stride - 1));  // the pair's element with bit `stride` clear
        const int hi = lo + stride;
        const float klo = key[lo], khi = key[hi];
        const int ilo = id[lo], ihi = id[hi];
        // (lo & size) == 0: this run is sorted best first, else worst first (bitonic merge).
        const bool swap = (lo & size) == 0 ? ranks_before(khi, ihi, klo, ilo)
                                           : ranks_before(klo, ilo, khi, ihi);
        if (swap) {
          key[lo] = khi;
          key[hi] = klo;
          id[lo] = ihi;
          id[hi] = ilo;
        }
      }
      __syncthreads();
    }
  }
}

// Sorts the c candidates of selector `which`, keeps the best min(c, k) at the front and raises
// its threshold. c is the count every thread read after the last barrier. Ends on a barrier.
__device__ void flush(const Selector& sel, BlockState& st, int which, int c) {
  int n = 1;
  while (n < c) n <<= 1;  // n <= cap: c <= cap and cap is a power of two
  for (int i = c + threadIdx.x; i < n; i += kThreads) {
    sel.key[i] = -INFINITY;
    sel.id[i] = kSentinelId;
  }
  __syncthreads();
  bitonic_sort(sel.key, sel.id, n);
  if (threadIdx.x == 0) {
    const int kept = min(c, sel.k);
    st.count[which] = kept;
    if (kept == sel.k) {
      st.full[which] = 1;
      st.theta[which] = sel.key[sel.k - 1];
    }
  }
  __syncthreads();
}

// Shape: grid = rows (one block per row, blockIdx.x = row), block = kThreads threads.
// logits: [rows, ld] fp32; tokens [0, vocab) of each row. k, b in [0, kMaxK]; out.top_* take k
// entries per row (the selection keeps top_keep(k) for the margin).
// tm.marks (optional): bit j of word j/32 of row r set for every token that may enter its token
// index list: x - lb >= tm.worst[j] is not false, lb = a lower bound on the row's final lse at the
// time of the test (the larger of the thread's running lse over its own tokens, this tile's
// included, and the block's, refreshed after tiles 0, 1, 3, 7, 15, 23, ...) minus mark_slack. A lower bound
// only admits more, and tm.worst can only be stale low, so no token that the exact test would
// take is left unmarked (token_index_column_marked re-checks the marked ones exactly).
// Dynamic shared memory: smem_bytes(k, b) (cap = 0 for an unused selection).
// The row is streamed in tiles of kTile tokens (coalesced, kItems loads in flight per thread).
// Per tile: each thread folds its tokens into a private (max, sum) for the lse, and appends to
// the shared candidate buffer every token whose key beats the selection's threshold (everything
// until k candidates are known). When the buffer could overflow during the next tile, it is
// sorted (bitonic) and cut to k, which raises the threshold; for typical rows that happens about
// once, after which almost no token passes the filter. Ties: the sort orders by (key desc,
// id asc), and a later token with key == threshold has a higher id, so it never displaces.
__global__ void __launch_bounds__(kThreads)
    row_reduce_kernel(const float* __restrict__ logits, int64_t ld, int vocab, int k, int b,
                      RowOutputs out, TokenMarks tm) {
  extern __shared__ __align__(16) unsigned char fi_reduce_smem[];
  BlockState& st = *reinterpret_cast<BlockState*>(fi_reduce_smem);
  const int ks = top_keep(k);
  const int cap_top = candidate_cap(ks), cap_bot = candidate_cap(b);
  Selector top{reinterpret_cast<float*>(fi_reduce_smem + kStateBytes), nullptr, cap_top, ks};
  top.id = reinterpret_cast<int*>(top.key + cap_top);
  Selector bot{reinterpret_cast<float*>(top.id + cap_top), nullptr, cap_bot, b};
  bot.id = reinterpret_cast<int*>(bot.key + cap_bot);

  const int64_t r = blockIdx.x;
  const float* row = logits + r * ld;
  if (threadIdx.x == 0) {
    st.count[0] = st.count[1] = 0;
    st.full[0] = st.full[1] = 0;
    st.theta[0] = st.theta[1] = -INFINITY;
    st.lb = -INFINITY;
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float m = -INFINITY, s = 0.f, t = 0.f;
  for (int t0 = 0, tile = 0; t0 < vocab; t0 += kTile, ++tile) {
    const bool full_t = st.full[0], full_b = st.full[1];
    const float th_t = st.theta[0], th_b = st.theta[1], lb_block = st.lb;
    float v[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int j = t0 + i * kThreads + int(threadIdx.x);
      v[i] = j < vocab ? __ldcs(row + j) : 0.f;  // read once: stream past the caches
    }
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int j = t0 + i * kThreads + int(threadIdx.x);
      if (j < vocab) lse_add(m, s, t, v[i]);
    }
    float lb = -INFINITY;
    if (tm.marks) {
      const float own = m == -INFINITY ? -INFINITY : m + logf(s);
      lb = own > lb_block ? own : lb_block;
      lb -= mark_slack(lb);
    }
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int j = t0 + i * kThreads + int(threadIdx.x);
      const bool valid = j < vocab;
      const float x = v[i];
      const bool real = valid && !isnan(x);
      if (k > 0) append(top, &st.count[0], real && (!full_t || x > th_t), x, j);
      if (b > 0) append(bot, &st.count[1], real && (!full_b || -x > th_b), -x, j);
      if (tm.marks) {
        // In double: exact for any two floats in range. !(a < b): NaN differences (an infinite
        // lb or x) mark, which only costs an exact check.
        const unsigned word =
            __ballot_sync(kFullMask, valid && !(double(x) - double(lb) < double(tm.worst[j])));
        const int j0 = t0 + i * kThreads + warp * 32;  // the warp's 32 consecutive tokens
        if (lane == 0 && j0 < vocab) tm.marks[r * tm.ld + j0 / 32] = word;
      }
    }
    const bool refresh = tm.marks && refresh_tile(tile);
    if (refresh) {  // the warp's running (max, sum) for the block's bound
      float wm = m, ws = s, wt = 0.f;
      for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(kFullMask, wm, o);
        const float s2 = __shfl_xor_sync(kFullMask, ws, o);
        lse_merge(wm, ws, wt, m2, s2, 0.f);
      }
      if (lane == 0) {
        st.lb_m[warp] = wm;
        st.lb_s[warp] = ws;
      }
    }
    __syncthreads();  // every append of this tile is done
    const int ct = st.count[0], cb = st.count[1];
    if (refresh && threadIdx.x == 0) {  // read at the next tile, after the barrier below
      float bm = st.lb_m[0], bs = st.lb_s[0], bt = 0.f;
      for (int w = 1; w < kWarps; ++w) lse_merge(bm, bs, bt, st.lb_m[w], st.lb_s[w], 0.f);
      st.lb = bm == -INFINITY ? -INFINITY : bm + logf(bs);
    }
    __syncthreads();  // every thread has read the counts before a flush or the next tile changes them
    if (k > 0 && ct > cap_top - kTile) flush(top, st, 0, ct);
    if (b > 0 && cb > cap_bot - kTile) flush(bot, st, 1, cb);
  }

  // Block log-sum-exp: warps by shuffles, then thread 0 over the warps.
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(kFullMask, m, o);
    const float s2 = __shfl_xor_sync(kFullMask, s, o);
    const float t2 = __shfl_xor_sync(kFullMask, t, o);
    lse_merge(m, s, t, m2, s2, t2);
  }
  if (lane == 0) {
    st.warp_m[warp] = m;
    st.warp_s[warp] = s;
    st.warp_t[warp] = t;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float bm = st.warp_m[0], bs = st.warp_s[0], bt = st.warp_t[0];
    for (int w = 1; w < kWarps; ++w) lse_merge(bm, bs, bt, st.warp_m[w], st.warp_s[w], st.warp_t[w]);
    st.lse = bm == -INFINITY ? -INFINITY : bm + logf(bs);
    st.entropy = bm == -INFINITY ? NAN : logf(bs) - bt / bs;
  }
  // Final cut to k (every thread read the counts after the loop's last barrier or the one above).
  const int ct = st.count[0], cb = st.count[1];
  __syncthreads();
  if (k > 0) flush(top, st, 0, ct);
  if (b > 0) flush(bot, st, 1, cb);
  __syncthreads();

  const float l = st.lse;
  const int kept_t = st.count[0], kept_b = st.count[1];
  for (int i = threadIdx.x; i < k; i += kThreads) {
    const bool have = i < kept_t;
    const float x = have ? top.key[i] : -INFINITY;
    out.top_ids[r * k + i] = have ? top.id[i] : -1;
    out.top_logits[r * k + i] = x;
    out.top_probs[r * k + i] = have && l != -INFINITY ? expf(x - l) : 0.f;
  }
  for (int i = threadIdx.x; i < b; i += kThreads) {
    const bool have = i < kept_b;
    out.bottom_ids[r * b + i] = have ? bot.id[i] : -1;
    out.bottom_logits[r * b + i] = have ? -bot.key[i] : INFINITY;
  }
  if (threadIdx.x == 0) {
    out.lse[r] = l;
    out.entropy[r] = st.entropy;
    out.margin[r] = kept_t >= 2 ? top.key[0] - top.key[1] : NAN;
  }
}

}  // namespace
}  // namespace reduce_detail
}  // namespace fi::gpu
