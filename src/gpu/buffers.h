// Owned memory of the CUDA code: a device buffer (cudaMalloc/cudaFree) and a page-locked host
// buffer (cudaMallocHost/cudaFreeHost), freed with the object, movable, never copied.
// Plain C++ (no CUDA header), so the plain-C++ interfaces of the CUDA backends can hold them.
#pragma once
#include <cstddef>
#include <string>

namespace fi::gpu {

// One allocation owned by one object, given back by its release function on destruction.
class OwnedMemory {
 public:
  ~OwnedMemory();
  OwnedMemory(OwnedMemory&& o) noexcept;
  OwnedMemory& operator=(OwnedMemory&& o) noexcept;
  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }

 protected:
  using Release = void (*)(void*);
  OwnedMemory() = default;
  OwnedMemory(size_t bytes, Release release) : bytes_(bytes), release_(release) {}
  void* p_ = nullptr;  // set by the derived constructor (null when nothing was allocated)

 private:
  size_t bytes_ = 0;
  Release release_ = nullptr;
};

// Device memory (cudaFree on destruction). Allocation failure throws fi::Error naming `what`,
// the bytes asked for and the bytes free.
class DeviceBuffer : public OwnedMemory {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, const std::string& what);
  // Copies the first n bytes to host memory (synchronous).
  void copy_to_host(void* dst, size_t n) const;
};

// Page-locked host memory, so copies run asynchronously on the copy engines. Allocation
// failure throws fi::Error naming `what` and the bytes asked for.
class PinnedBuffer : public OwnedMemory {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(size_t bytes, const char* what);
};

// "N bytes (X.XX GiB)", for the memory messages.
std::string bytes_str(size_t b);

}  // namespace fi::gpu
