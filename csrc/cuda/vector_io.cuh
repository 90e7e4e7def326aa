// 16-byte vector accesses for the elementwise kernels: one load or store instruction moves a
// Pack16 (8 halves, 4 floats or 2 doubles), so a warp covers 512 contiguous bytes per instruction
// instead of 128 (float) or 256 (double), with a quarter (half) of the memory instructions.
#pragma once

#include <cstdint>

namespace fastcredit::cuda {

template <typename T>
struct alignas(16) Pack16 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

// Whether every pointer allows Pack16 accesses: torch's allocations do, a view that starts at
// an odd storage offset may not (the kernels then take their scalar path).
template <typename... P>
inline bool all_aligned16(const P*... pointers) {
  return ((reinterpret_cast<std::uintptr_t>(pointers) % 16 == 0) && ...);
}

}  // namespace fastcredit::cuda
