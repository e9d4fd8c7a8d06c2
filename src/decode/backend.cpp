// make_decoder: the CPU backend's node-shared LM-head and thread count, or the CUDA backend's
// replica (decode/cuda/cuda_decoder.h).
#include "decode/backend.h"

#include <algorithm>
#include <chrono>

#include "common/error.h"
#include "common/half.h"
#include "decode/cuda/cuda_decoder.h"
#include "gpu/device.h"
#include "parallel/cores.h"

namespace fi {

// Called only where takes_block(b) (the job widens the rows of other backends itself).
void Decoder::decode_block(const RowBlock& b, ChunkResult&) {
  FI_FAIL(std::string("the ") + name() + " backend takes no " + dtype_name(b.dtype) + " rows as stored");
}

BackendKind choose_backend(const std::string& name) {
  if (name == "cuda") {
    if (!cuda_available()) FI_FAIL("--backend cuda: no usable CUDA device on this node");
    return BackendKind::Cuda;
  }
  if (name == "auto") return cuda_available() ? BackendKind::Cuda : BackendKind::Cpu;
  if (name != "cpu") FI_FAIL("--backend: unknown backend '" + name + "' (expected auto, cpu or cuda)");
  return BackendKind::Cpu;
}

// The LM-head as fp32, one copy per node in an MPI shared-memory window. Each rank of the node
// reads and widens its share of the rows, so the node reads the tensor from disk exactly once.
class SharedLmHead {
 public:
  // bf16 (--gemm bf16): the GEMM's copy of the rows rounded to bf16, in a second window; a bf16
  // checkpoint then has no fp32 window at all (its bf16 rows are exact: the decoder widens them).
  SharedLmHead(const Model& model, const Comms& c, bool bf16) {
    const std::string name = model.lm_head_name();
    const TensorInfo& t = model.ckpt.info(name);
    vocab_ = t.shape[0];
    hidden_ = t.shape[1];
    const bool f32 = !(bf16 && t.dtype == DType::BF16);
    MPI_Aint bytes = c.local_rank == 0 && f32 ? MPI_Aint(vocab_ * hidden_ * sizeof(float)) : 0;
    float* base = nullptr;
    FI_CHECK(MPI_Win_allocate_shared(bytes, sizeof(float), MPI_INFO_NULL, c.node, &base, &win_) ==
                 MPI_SUCCESS,
             "cannot allocate the shared LM-head window (" + std::to_string(bytes >> 20) + " MiB)");
    MPI_Aint size = 0;
    int disp = 0;
    MPI_Win_shared_query(win_, 0, &size, &disp, &data_);
    if (!f32) data_ = nullptr;
    if (bf16) {
      MPI_Aint b16 = c.local_rank == 0 ? MPI_Aint(vocab_ * hidden_ * 2) : 0;
      uint16_t* base16 = nullptr;
      FI_CHECK(MPI_Win_allocate_shared(b16, 2, MPI_INFO_NULL, c.node, &base16, &win16_) == MPI_SUCCESS,
               "cannot allocate the shared bf16 LM-head window (" + std::to_string(b16 >> 20) + " MiB)");
      MPI_Win_shared_query(win16_, 0, &size, &disp, &bf16_);
      bf16_exact_ = t.dtype == DType::BF16;
    }
    const SafetensorsFile& f = model.ckpt.file_of(name);
    int64_t r0 = vocab_ * c.local_rank / c.local_size, r1 = vocab_ * (c.local_rank + 1) / c.local_size;
    std::string error;  // reported by the caller's collective check, after the fence
    try {
      const int64_t step = 4096;
      for (int64_t r = r0; r < r1; r += step) {
        const int64_t n = std::min(step, r1 - r);
        if (!data_) {  // the checkpoint's own bf16 bytes
          f.read_bytes(t, uint64_t(r * hidden_) * 2, uint64_t(n * hidden_) * 2, bf16_ + r * hidden_);
          continue;
        }
        f.read_rows_f32(t, r, n, data_ + r * hidden_);
        if (bf16_)
          for (int64_t i = r * hidden_; i < (r + n) * hidden_; ++i) bf16_[i] = f32_to_bf16(data_[i]);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    MPI_Win_fence(0, win_);
    if (win16_ != MPI_WIN_NULL) MPI_Win_fence(0, win16_);
    MPI_Barrier(c.node);
    if (!error.empty()) throw Error(error);
  }
  ~SharedLmHead() {
    if (win_ != MPI_WIN_NULL) MPI_Win_free(&win_);
    if (win16_ != MPI_WIN_NULL) MPI_Win_free(&win16_);
  }
  LmHead view() const { return {vocab_, hidden_, data_, bf16_, bf16_exact_}; }

 private:
  MPI_Win win_ = MPI_WIN_NULL, win16_ = MPI_WIN_NULL;
  float* data_ = nullptr;
  uint16_t* bf16_ = nullptr;
  bool bf16_exact_ = false;
  int64_t vocab_ = 0, hidden_ = 0;
};

DecodeBackend::DecodeBackend() = default;
DecodeBackend::DecodeBackend(DecodeBackend&&) noexcept = default;
DecodeBackend& DecodeBackend::operator=(DecodeBackend&&) noexcept = default;
DecodeBackend::~DecodeBackend() {
  dec.reset();  // before the LM-head it reads
}

DecodeBackend make_decoder(BackendKind kind, const Model& model, const std::vector<float>& gamma,
                           const DecodeParams& p, const BackendOptions& o, const Comms& c) {
  DecodeBackend b;
  const auto t0 = std::chrono::steady_clock::now();
  if (kind == BackendKind::Cuda) {
    collective(c.world, [&] {
      CudaSetup setup;
      setup.node_comm = c.node;
      setup.split_input = p.gemm == GemmMode::Exact;
      setup.rescore = p.gemm == GemmMode::Bf16;
      b.dec = make_cuda_decoder(model, gamma, p, setup);
      b.replicate_s = setup.replicate_seconds;
    });
    return b;
  }
  collective(c.world, [&] { b.head = std::make_unique<SharedLmHead>(model, c, p.gemm == GemmMode::Bf16); });
  b.replicate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  b.threads = o.threads > 0 ? o.threads : rank_workers(c);
  b.dec = make_cpu_decoder(b.head->view(), gamma, p, b.threads);
  return b;
}

}  // namespace fi
