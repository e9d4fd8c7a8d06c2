// The CUDA backend's entry point, plain C++ (no CUDA header): one GPU per rank, the node's
// ranks assemble the LM-head replica on their devices with NCCL, cuBLAS GEMM + fused reduction.
// Includable in every build: without CUDA, make_cuda_decoder (decode/no_cuda.cpp) throws.
#pragma once
#include <mpi.h>

#include <memory>
#include <vector>

#include "decode/decoder.h"
#include "model/config.h"

namespace fi {

struct CudaSetup {
  MPI_Comm node_comm = MPI_COMM_NULL;  // ranks of this node; its rank is the local rank = device
                                       // (MPI_COMM_NULL: a single rank on device 0)
  // 16-bit LM-heads only. true (the decode's default): the normed rows go in as hi + lo 16-bit
  // parts (two GEMMs, about twice the GEMM time) and the logits match the fp32 path to ~1e-5.
  // false (decode --fast-gemm): the normed rows are rounded to the LM-head's dtype for one
  // 16-bit GEMM, which moves probabilities by up to ~1e-2 relative at real model scales.
  bool split_input = true;
  // --gemm bf16 (decode/rescore.h): one 16-bit GEMM, the candidates re-scored exactly, the lse
  // corrected; rows the error bound cannot certify go through the hi + lo path again.
  bool rescore = false;
  double replicate_seconds = 0;  // out: time to build the LM-head replica (max over the node)
  int device = -1;               // out: the CUDA device this rank uses
};

// Collective over setup.node_comm (every rank of the node calls it). Throws fi::Error when no
// usable device is present or memory is short (saying how much is needed); when one rank of
// the node fails while reading the LM-head, every rank of the node throws.
std::unique_ptr<Decoder> make_cuda_decoder(const Model& model, const std::vector<float>& gamma,
                                           const DecodeParams& p, CudaSetup& setup);

}  // namespace fi
