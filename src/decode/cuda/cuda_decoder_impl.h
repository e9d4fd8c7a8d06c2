// The CUDA backend's inner interface, plain C++ (no CUDA header), for the tests and the
// benchmark: the LM-head on the device (uploaded or replicated over the node), the decoder class
// with a device-input entry point, and the reduction kernel on host data. Device buffers and
// device selection are gpu/buffers.h and gpu/device.h.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "decode/decoder.h"
#include "gpu/buffers.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace fi::gpu {

// The LM-head on the current device: data [rows >= vocab, hidden] of dtype (row-major, the
// checkpoint's own bytes; rows past vocab are padding and never read by the decoder).
struct DeviceLmHead {
  DeviceBuffer data;
  DType dtype = DType::BF16;
  int64_t vocab = 0, hidden = 0;
};

// host: [vocab, hidden] of dtype (raw bytes) -> the current device.
DeviceLmHead upload_lm_head(const void* host, DType dtype, int64_t vocab, int64_t hidden);

struct ReplicaOptions {
  bool force_nccl = false;  // use NCCL even for one rank (tests exercise the NCCL path on one GPU)
};
// Collective over node_comm: each rank reads 1/n of the LM-head rows from the checkpoint and
// ncclAllGather assembles the replica on every rank's (current) device. With more ranks than
// devices on the node (NCCL allows one rank per device), every rank reads the whole LM-head.
// seconds: the replica's build time, the maximum over the node.
DeviceLmHead replicate_lm_head(const Model& model, MPI_Comm node_comm, const ReplicaOptions& opt,
                               double* seconds);

struct CudaDecoderOptions {
  bool split_input = false;     // see CudaSetup::split_input
  bool rescore = false;         // see CudaSetup::rescore (takes precedence over split_input)
  int64_t max_sub_rows = 2048;  // rows per GEMM at most; halved until the buffers fit
  int64_t sub_rows = 0;         // rows per GEMM; 0 = automatic (see CudaDecoder::sub_rows)
};

class CudaDecoder final : public Decoder {
 public:
  // The decoder owns head; gamma: [hidden] (may be empty for NormMode::None).
  CudaDecoder(DeviceLmHead head, const std::vector<float>& gamma, const DecodeParams& p,
              const CudaDecoderOptions& o = {});
  ~CudaDecoder() override;
  const char* name() const override { return "cuda"; }
  // The token index is kept on the device (decode/cuda/token_index_kernel.cuh) and brought
  // back to the host TokenIndex objects by sync_token_index.
  void set_token_index_target(TokenIndex* ti, int32_t layer, int64_t row0) override;
  void sync_token_index() override;
  // x: [rows, hidden] fp32 on the host.
  void decode(const float* x, int64_t rows, ChunkResult& out) override;
  // Rows as stored: bf16, f16, f32 rows uploaded as they are and widened by the norm kernel;
  // columns (down) and FP8 uploaded as they are, then widened, transposed and dequantised by
  // the widening kernel (gpu/widen.h) into fp32 rows on the device.
  bool takes_block(const RowBlock& b) const override;
  void decode_block(const RowBlock& b, ChunkResult& out) override;
  // Pinned memory (cudaHostAlloc on the decoder's device) for the row feed.
  HostAlloc host_alloc() const override;
  // x: [rows, hidden] of x_dtype on the decoder's device. Results still come back to the host.
  void decode_device(const void* x, DType x_dtype, int64_t rows, ChunkResult& out);
  // Rows per GEMM for a call of `rows` rows (the call is pipelined in pieces of this size).
  int64_t sub_rows(int64_t rows) const;
  int64_t max_sub_rows() const;
  int64_t redecoded_rows() const override;
  std::string gemm_info() const override;
  int device() const;
  int64_t logits_ld() const;  // the row stride of the logits buffers (vocab rounded up)
  const DeviceLmHead& head() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The reduction kernel on host logits [rows, vocab] (uploaded, reduced, downloaded): for tests.
void reduce_rows_cuda(const float* logits, int64_t rows, int64_t vocab, int top_k, int bottom_k,
                      ChunkResult& out);

}  // namespace fi::gpu
