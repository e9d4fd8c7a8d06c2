// The check macros of the CUDA code: a failed CUDA runtime or cuBLAS call throws fi::Error
// naming the call, with file:line via FI_FAIL (NCCL's macro is in decode/cuda/nccl_replica.cpp).
// Only for the CUDA sources: this header includes CUDA headers.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "common/error.h"

namespace fi::gpu {

inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_(unknown)";
  }
}

}  // namespace fi::gpu

#define FI_CUDA_CHECK(call)                                                                   \
  do {                                                                                        \
    cudaError_t fi_e_ = (call);                                                               \
    if (fi_e_ != cudaSuccess)                                                                 \
      FI_FAIL(std::string("CUDA error: ") + cudaGetErrorString(fi_e_) + " (" #call ")");      \
  } while (0)

#define FI_CUBLAS_CHECK(call)                                                                 \
  do {                                                                                        \
    cublasStatus_t fi_s_ = (call);                                                            \
    if (fi_s_ != CUBLAS_STATUS_SUCCESS)                                                       \
      FI_FAIL(std::string("cuBLAS error: ") + ::fi::gpu::cublas_status_name(fi_s_) + " (" #call ")"); \
  } while (0)
