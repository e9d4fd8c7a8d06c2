// Owned CUDA stream, event and cuBLAS handle: created with the object, destroyed with it.
// Only for the CUDA sources: this header includes CUDA headers.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "gpu/check.h"

namespace fi::gpu {

// A non-blocking stream (it does not wait for the legacy default stream).
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { FI_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s) cudaStreamDestroy(s);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

struct Event {
  cudaEvent_t e = nullptr;
  Event() { FI_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)); }
  ~Event() {
    if (e) cudaEventDestroy(e);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

struct Blas {
  cublasHandle_t h = nullptr;
  Blas() { FI_CUBLAS_CHECK(cublasCreate(&h)); }
  ~Blas() {
    if (h) cublasDestroy(h);
  }
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
};

}  // namespace fi::gpu
