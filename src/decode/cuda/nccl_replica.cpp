// The LM-head replica on every rank's device: each rank of a node reads 1/n of the rows from
// the checkpoint (pread of its byte range) into its slice of the device buffer, and one
// in-place ncclAllGather assembles the whole matrix on every device. The NCCL id comes from
// local rank 0 by MPI_Bcast over the node communicator.
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <vector>

#include "decode/cuda/cuda_decoder_impl.h"
#include "gpu/check.h"

#define FI_NCCL_CHECK(call)                                                             \
  do {                                                                                  \
    ncclResult_t fi_r_ = (call);                                                        \
    if (fi_r_ != ncclSuccess)                                                           \
      FI_FAIL(std::string("NCCL error: ") + ncclGetErrorString(fi_r_) + " (" #call ")"); \
  } while (0)

namespace fi::gpu {
namespace {

// Rows [row0, row0 + nrows) of a 2-D tensor, raw bytes, into dst (device), in blocks through
// a host buffer. row_bytes: bytes per row.
void read_rows_to_device(const SafetensorsFile& f, const TensorInfo& t, int64_t row0, int64_t nrows,
                         size_t row_bytes, void* dst) {
  if (nrows <= 0) return;
  const size_t total = size_t(nrows) * row_bytes, first = size_t(row0) * row_bytes;
  std::vector<unsigned char> buf(std::min(total, size_t(64) << 20));
  for (size_t off = 0; off < total; off += buf.size()) {
    const size_t n = std::min(buf.size(), total - off);
    f.read_bytes(t, first + off, n, buf.data());
    FI_CUDA_CHECK(cudaMemcpy(static_cast<char*>(dst) + off, buf.data(), n, cudaMemcpyHostToDevice));
  }
}

// A communicator destroyed on scope exit (aborted if the collective failed).
struct NcclComm {
  ncclComm_t c = nullptr;
  bool ok = false;
  ~NcclComm() {
    if (c) ok ? ncclCommDestroy(c) : ncclCommAbort(c);
  }
};

struct OwnStream {
  cudaStream_t s = nullptr;
  ~OwnStream() {
    if (s) cudaStreamDestroy(s);
  }
};

}  // namespace

DeviceLmHead replicate_lm_head(const Model& model, MPI_Comm node, const ReplicaOptions& opt,
                               double* seconds) {
  int n = 1, rank = 0;
  if (node != MPI_COMM_NULL) {
    MPI_Comm_size(node, &n);
    MPI_Comm_rank(node, &rank);
  }
  int ndev = 0;
  FI_CUDA_CHECK(cudaGetDeviceCount(&ndev));
  const std::string name = model.lm_head_name();
  const TensorInfo& t = model.ckpt.info(name);
  const SafetensorsFile& f = model.ckpt.file_of(name);
  if (t.shape.size() != 2)
    FI_FAIL(f.path() + ": tensor '" + name + "' is not 2-D; expected the LM-head [vocab, hidden]");
  const int64_t V = t.shape[0], H = t.shape[1];
  const size_t row_bytes = size_t(H) * dtype_size(t.dtype);

  // NCCL allows one rank per device: with more ranks than devices every rank reads it all.
  int use_nccl = (n > 1 || opt.force_nccl) && n <= ndev ? 1 : 0;
  if (node != MPI_COMM_NULL) {
    MPI_Allreduce(MPI_IN_PLACE, &use_nccl, 1, MPI_INT, MPI_MIN, node);
    MPI_Barrier(node);  // time the replica, not the arrival of the slowest rank
  }
  const auto t0 = std::chrono::steady_clock::now();

  DeviceLmHead h;
  h.dtype = t.dtype;
  h.vocab = V;
  h.hidden = H;
  const int64_t per = use_nccl ? (V + n - 1) / n : V;  // rows each rank reads
  char* mine = nullptr;                                 // this rank's slice on the device
  std::string error;
  try {
    h.data = DeviceBuffer(size_t(per) * size_t(use_nccl ? n : 1) * row_bytes, "the LM-head replica");
    const int64_t r0 = use_nccl ? std::min(V, rank * per) : 0, r1 = std::min(V, r0 + per);
    mine = static_cast<char*>(h.data.get()) + size_t(use_nccl ? rank : 0) * size_t(per) * row_bytes;
    read_rows_to_device(f, t, r0, r1 - r0, row_bytes, mine);
    if (r1 - r0 < per)  // padding rows of the last slices: defined bytes, never read
      FI_CUDA_CHECK(cudaMemset(mine + size_t(r1 - r0) * row_bytes, 0, size_t(per - (r1 - r0)) * row_bytes));
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "unknown error";
  }
  // Agree before the collective, so that one rank's read error never leaves the others waiting.
  if (node != MPI_COMM_NULL) {
    int ok = error.empty() ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, node);
    if (!ok && error.empty()) error = "another rank of this node failed to read the LM-head";
  }
  if (!error.empty()) FI_FAIL(error);

  if (use_nccl) {
    ncclUniqueId id;
    if (rank == 0) FI_NCCL_CHECK(ncclGetUniqueId(&id));
    if (node != MPI_COMM_NULL) MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, node);
    NcclComm comm;
    OwnStream stream;
    FI_CUDA_CHECK(cudaStreamCreateWithFlags(&stream.s, cudaStreamNonBlocking));
    FI_NCCL_CHECK(ncclCommInitRank(&comm.c, n, id, rank));
    // In place: rank r's slice already sits at recvbuff + r * sendcount.
    FI_NCCL_CHECK(ncclAllGather(mine, h.data.get(), size_t(per) * row_bytes, ncclInt8, comm.c,
                                stream.s));
    FI_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    comm.ok = true;
  }
  FI_CUDA_CHECK(cudaDeviceSynchronize());
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (node != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, node);
  if (seconds) *seconds = dt;
  return h;
}

}  // namespace fi::gpu
