// Owned device and pinned host memory (see buffers.h); an allocation failure clears the CUDA
// error and throws with the sizes, so the job's error line says what did not fit.
#include "gpu/buffers.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <utility>

#include "gpu/check.h"
#include "gpu/device.h"

namespace fi::gpu {

std::string bytes_str(size_t b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%zu bytes (%.2f GiB)", b, double(b) / double(1ull << 30));
  return buf;
}

// ---- OwnedMemory -----------------------------------------------------------------------------

OwnedMemory::~OwnedMemory() {
  if (p_) release_(p_);
}

OwnedMemory::OwnedMemory(OwnedMemory&& o) noexcept
    : p_(o.p_), bytes_(o.bytes_), release_(o.release_) {
  o.p_ = nullptr;
  o.bytes_ = 0;
}

OwnedMemory& OwnedMemory::operator=(OwnedMemory&& o) noexcept {
  std::swap(p_, o.p_);
  std::swap(bytes_, o.bytes_);
  std::swap(release_, o.release_);
  return *this;
}

// ---- DeviceBuffer, PinnedBuffer --------------------------------------------------------------

namespace {

// *p = alloc(bytes) (nothing for 0 bytes). On failure *p stays null and the CUDA error is
// cleared (and returned), so the caller's message may still ask the device what is free.
cudaError_t try_alloc(void** p, size_t bytes, cudaError_t (*alloc)(void**, size_t)) {
  if (bytes == 0) return cudaSuccess;
  const cudaError_t e = alloc(p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *p = nullptr;
  }
  return e;
}

}  // namespace

DeviceBuffer::DeviceBuffer(size_t bytes, const std::string& what)
    : OwnedMemory(bytes, [](void* p) { cudaFree(p); }) {
  const cudaError_t e = try_alloc(&p_, bytes, cudaMalloc);
  if (e != cudaSuccess)
    FI_FAIL("CUDA decode: out of device memory: " + what + " needs " + bytes_str(bytes) +
            " on device " + std::to_string(current_device()) + ", " +
            bytes_str(free_device_bytes()) + " free (" + cudaGetErrorString(e) + ")");
}

void DeviceBuffer::copy_to_host(void* dst, size_t n) const {
  if (n > bytes()) FI_FAIL("DeviceBuffer::copy_to_host: " + std::to_string(n) + " bytes asked of " +
                           std::to_string(bytes()));
  if (n) FI_CUDA_CHECK(cudaMemcpy(dst, p_, n, cudaMemcpyDeviceToHost));
}

PinnedBuffer::PinnedBuffer(size_t bytes, const char* what)
    : OwnedMemory(bytes, [](void* p) { cudaFreeHost(p); }) {
  const cudaError_t e = try_alloc(&p_, bytes, cudaMallocHost);
  if (e != cudaSuccess)
    FI_FAIL(std::string("CUDA decode: cannot allocate ") + bytes_str(bytes) +
            " of pinned host memory for " + what + " (" + cudaGetErrorString(e) + ")");
}

}  // namespace fi::gpu
