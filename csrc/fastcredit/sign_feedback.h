// Sign-concordant feedback B = |M| ⊙ sign(W), built a group of four consecutive entries of a
// row at a time (the unit in which Philox produces values). Shared by the CPU and CUDA kernels
// so both produce the same bits.
#pragma once

#include <cmath>
#include <cstdint>

#include "convert.h"
#include "macros.h"
#include "philox.h"

namespace fastcredit {

// Where |M| comes from: one scalar (uSF), a stored tensor with W's shape (frSF), or the seeded
// matrix |F(seed)| on W viewed as [rows, cols] (frSF seeded; brSF with a per-step seed).
enum class Magnitude : int { kScalar = 0, kStored = 1, kSeeded = 2 };

// The seed of brSF's draw number `step`: the first two words of F(seed)'s Philox block at row
// 2^64 - 1 (a row no feedback matrix reaches), column group `step`. Distinct steps give
// unrelated keys; the same (seed, step) always gives the same key.
FC_HOST_DEVICE FC_INLINE uint64_t step_seed(uint64_t seed, uint64_t step) {
  const Philox4 block = feedback_block(seed, ~uint64_t{0}, step);
  return (static_cast<uint64_t>(block.v[1]) << 32) | block.v[0];
}

// sign(w) * m with sign(0) = 0 and sign(NaN) = NaN. The zero case is m * 0 so that a NaN or
// infinite magnitude still shows up, as it does in the reference's sign(w) * m. Written as
// selects, not branches, so CPU loops vectorise and GPU warps do not diverge.
template <typename T>
FC_HOST_DEVICE FC_INLINE T signed_magnitude(T w, T m) {
  T r = w > T(0) ? m : static_cast<T>(-m);
  r = w == T(0) ? static_cast<T>(m * T(0)) : r;
  return w != w ? w : r;
}

// signed_magnitude for storage type T computed in Acc: the magnitude is rounded to T first,
// as when computing in T itself (so w = 0 with a magnitude that overflows T still gives NaN).
template <typename T, typename Acc>
FC_HOST_DEVICE FC_INLINE T signed_magnitude_in(T w, Acc m) {
  return value_as<T>(signed_magnitude(value_as<Acc>(w), value_as<Acc>(value_as<T>(m))));
}

// Entry i of B in the unseeded modes, which do not depend on where i lies in W: kScalar ->
// scale; kStored -> |magnitude[i]| * scale rounded to T after an Acc (opmath) product.
template <typename T, typename Acc>
FC_HOST_DEVICE FC_INLINE T unseeded_sign_feedback(const T* __restrict__ w,
                                                  const T* __restrict__ magnitude, int64_t i,
                                                  Magnitude kind, double scale) {
  if (kind == Magnitude::kScalar) {
    return signed_magnitude_in<T, Acc>(w[i], static_cast<Acc>(scale));
  }
  const Acc abs_m = static_cast<Acc>(fabs(static_cast<double>(value_as<Acc>(magnitude[i]))));
  return signed_magnitude_in<T, Acc>(w[i], abs_m * static_cast<Acc>(scale));
}

// The seeded modes: writes out[row, 4 * group + lane] = sign(W) * |scale * F(seed)[row, col]|
// (computed in double, rounded to Acc and then to T, as the CPU kernel rounds) for the lanes
// inside [0, cols) of the contiguous [rows, cols] view of W; one Philox block per call.
template <typename T, typename Acc>
FC_HOST_DEVICE FC_INLINE void seeded_sign_feedback_group(const T* __restrict__ w,
                                                         T* __restrict__ out, int64_t row,
                                                         int64_t group, int64_t cols,
                                                         uint64_t seed, Dist dist, double scale) {
  double seeded[4];
  feedback_group(seed, static_cast<uint64_t>(row), static_cast<uint64_t>(group), dist, scale,
                 seeded);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    const int64_t col = group * 4 + lane;
    if (col >= cols) break;
    const int64_t idx = row * cols + col;
    out[idx] = signed_magnitude_in<T, Acc>(w[idx], static_cast<Acc>(fabs(seeded[lane])));
  }
}

}  // namespace fastcredit
