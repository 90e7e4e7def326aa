// Philox4x32-10 counter-based generator (Salmon et al., SC'11) and the distributions that
// fastcredit's feedback matrices use. Host+device clean, no library dependency: the same
// code runs in CPU kernels, CUDA kernels and the CUDA emulation, so a seed gives the same
// bits everywhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace fastcredit {

struct Philox4 {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

FC_HOST_DEVICE FC_INLINE void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}
}  // namespace philox_detail

// Ten rounds of Philox4x32 on `counter` under `key`.
FC_HOST_DEVICE FC_INLINE Philox4 philox4x32_10(Philox4 counter, uint32_t key0, uint32_t key1) {
  using namespace philox_detail;
  uint32_t c0 = counter.v[0], c1 = counter.v[1], c2 = counter.v[2], c3 = counter.v[3];
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c0, hi0, lo0);
    mulhilo(kMul1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ key0;
    const uint32_t n2 = hi0 ^ c3 ^ key1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// ---------------------------------------------------------------------------------------
// Bit-reproducible arithmetic. nvcc contracts a*b+c into FMA by default and host compilers
// may too, which changes the last bits; the __d*_rn intrinsics are never contracted, and host
// code is built with -ffp-contract=off. Division and sqrt are correctly rounded on both.
namespace exact {
FC_HOST_DEVICE FC_INLINE double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
FC_HOST_DEVICE FC_INLINE double add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// The bits of a value as another type of the same size (std::bit_cast, which nvcc's C++17
// lacks; both compilers turn the copy into a register move). No FP operation, so nothing to
// round or contract.
template <typename To, typename From>
FC_HOST_DEVICE FC_INLINE To bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
  memcpy(&to, &from, sizeof to);
  return to;
}

// log(k) for an integer 1 <= k <= 2^24, from +, *, / only (libm differs between devices).
// Exponent and mantissa are read off the bits of the double k: no data-dependent loop and no
// division for the power-of-two scaling, so GPU warps do not diverge and the CPU's batched
// Box-Muller (cpu/feedback_rows.cpp) vectorises with this function inlined.
FC_HOST_DEVICE FC_INLINE double log_of_int(uint32_t k) {
  // via int32: k <= 2^24, and int32 -> double has a CPU vector instruction, uint32 not
  const auto k_bits = bit_cast<uint64_t>(static_cast<double>(static_cast<int32_t>(k)));
  // k = m * 2^e with m in [1, 2)
  double m = bit_cast<double>((k_bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
  const bool above = m > 1.4142135623730951;  // centre m on 1 so the series converges fast
  m = above ? mul(m, 0.5) : m;
  const double e = static_cast<double>(static_cast<int>(k_bits >> 52) - 1023 + above);
  // log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716
  const double s = add(m, -1.0) / add(m, 1.0);
  const double s2 = mul(s, s);
  double series = 1.0 / 23.0;
#pragma unroll
  for (int n = 21; n >= 1; n -= 2) series = add(mul(series, s2), 1.0 / n);
  const double ln2_hi = 6.93147180369123816490e-01;  // exact in 32 bits of mantissa
  const double ln2_lo = 1.90821492927058770002e-10;
  return add(add(mul(e, ln2_hi), mul(2.0, mul(s, series))), mul(e, ln2_lo));
}

// t = j / 2^24 (0 <= j < 2^24) as quadrant q = round(4t) mod 4 plus r = r_int / 2^24 =
// t - round(4t) / 4 in [-1/8, 1/8], exact in integers.
FC_HOST_DEVICE FC_INLINE uint32_t quarter_turns(uint32_t j, int32_t& r_int) {
  const uint32_t quarters = (j + (1u << 21)) >> 22;
  r_int = static_cast<int32_t>(j) - static_cast<int32_t>(quarters << 22);
  return quarters & 3u;
}

// sin and cos of 2*pi*t for t = j / 2^24, 0 <= j < 2^24.
FC_HOST_DEVICE FC_INLINE void sincos_2pi(uint32_t j, double& sin_out, double& cos_out) {
  int32_t r_int;
  const uint32_t q = quarter_turns(j, r_int);
  const double two_pi = 6.28318530717958647692;
  const double a = mul(two_pi, static_cast<double>(r_int) * (1.0 / 16777216.0));  // |a| <= pi/4
  const double a2 = mul(a, a);
  // Taylor to a^17 / a^16: truncation < 1e-17 for |a| <= pi/4
  double sin_poly = 1.0 / 355687428096000.0;  // 1/17!, then Horner inward
  double cos_poly = 1.0 / 20922789888000.0;   // 1/16!
  const double sin_coef[8] = {-1.0 / 1307674368000.0, 1.0 / 6227020800.0, -1.0 / 39916800.0,
                              1.0 / 362880.0,         -1.0 / 5040.0,      1.0 / 120.0,
                              -1.0 / 6.0,             1.0};
  const double cos_coef[8] = {-1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0,
                              1.0 / 40320.0,        -1.0 / 720.0,      1.0 / 24.0,
                              -1.0 / 2.0,           1.0};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    sin_poly = add(mul(sin_poly, a2), sin_coef[i]);
    cos_poly = add(mul(cos_poly, a2), cos_coef[i]);
  }
  const double s = mul(sin_poly, a);
  const double c = cos_poly;
  // Rotate by q quarter turns: (s, c), (c, -s), (-s, -c), (-c, s). Selects, not a switch, so
  // the CPU's batched Box-Muller (cpu/feedback_rows.cpp) vectorises with this function inlined.
  const double sin_r = (q & 1u) ? c : s;
  const double cos_r = (q & 1u) ? s : c;
  sin_out = (q & 2u) ? -sin_r : sin_r;
  cos_out = ((q + 1u) & 2u) ? -cos_r : cos_r;
}
}  // namespace exact

// ---------------------------------------------------------------------------------------
// Distributions. Each turns one Philox output block into 4 values. kUniform and kNormal are
// computed in FP64 with the exact:: operations above, bit-identical on every device;
// kUniform32 and kNormal32 map the same words in float32 arithmetic for GPUs whose FP64 rate
// is a small fraction of their FP32 rate (same distribution, not bit-identical across devices).
enum class Dist : int { kUniform = 0, kNormal = 1, kRademacher = 2, kUniform32 = 3, kNormal32 = 4 };

FC_HOST_DEVICE FC_INLINE bool is_float32_dist(Dist dist) {
  return dist == Dist::kUniform32 || dist == Dist::kNormal32;
}

// Symmetric uniform on [-1, 1) with 24-bit resolution: exact in float32, so every dtype
// sees the same values.
FC_HOST_DEVICE FC_INLINE double uniform_from_bits(uint32_t bits) {
  return static_cast<double>(static_cast<int32_t>(bits) >> 8) * (1.0 / 8388608.0);
}

FC_HOST_DEVICE FC_INLINE double rademacher_from_bits(uint32_t bits) {
  return (bits >> 31) ? -1.0 : 1.0;
}

// Box-Muller on words (2p, 2p+1): lane 2p gets r cos(theta), lane 2p+1 gets r sin(theta).
FC_HOST_DEVICE FC_INLINE void normal_pair_from_bits(uint32_t radius_bits, uint32_t angle_bits,
                                                    double& even, double& odd) {
  // u1 = k / 2^24 with k in [1, 2^24], so log(u1) = log(k) - 24 log 2 and never log(0)
  const uint32_t k = (radius_bits >> 8) + 1u;
  const double log_u1 = exact::add(exact::log_of_int(k), -16.635532333438687);  // 24 ln 2
  const double r = sqrt(exact::mul(-2.0, log_u1));
  double s, c;
  exact::sincos_2pi(angle_bits >> 8, s, c);
  even = exact::mul(r, c);
  odd = exact::mul(r, s);
}

// The float32 generator. uniform32 is uniform's 24-bit integer times 2^-23, exact in float32.
FC_HOST_DEVICE FC_INLINE float uniform32_from_bits(uint32_t bits) {
  return static_cast<float>(static_cast<int32_t>(bits) >> 8) * (1.0f / 8388608.0f);
}

// normal32: the Box-Muller of normal_pair_from_bits in float32. The radius uses the platform's
// logf and sqrtf (CUDA's accurate logf on the device, 1 ulp; the C library's on the host), not
// the fast __logf: its absolute error of 2^-21 near u1 = 1 would swamp log(u1) of about -2^-24
// and could make it positive. u1 = k 2^-24 is exact in float32. The angle is reduced to
// [-pi/4, pi/4] in integers, as in the FP64 path, and sin/cos are Taylor polynomials there
// (truncation < 0.1 ulp): libdevice's sinf/cosf would bring a Payne-Hanek branch with FP64
// instructions that this range never needs.
FC_HOST_DEVICE FC_INLINE void normal32_pair_from_bits(uint32_t radius_bits, uint32_t angle_bits,
                                                      float& even, float& odd) {
  const float u1 =
      static_cast<float>(static_cast<int32_t>((radius_bits >> 8) + 1u)) * (1.0f / 16777216.0f);
  const float r = sqrtf(-2.0f * logf(u1));
  int32_t r_int;
  const uint32_t q = exact::quarter_turns(angle_bits >> 8, r_int);
  const float a = static_cast<float>(r_int) * (6.28318530717958647692f / 16777216.0f);
  const float a2 = a * a;
  // sin to a^9 (next term < 2.5e-9 relative at pi/4), cos to a^10 (next < 1.6e-10)
  constexpr float s3 = -1.0f / 6, s5 = 1.0f / 120, s7 = -1.0f / 5040, s9 = 1.0f / 362880;
  constexpr float c4 = 1.0f / 24, c6 = -1.0f / 720, c8 = 1.0f / 40320, c10 = -1.0f / 3628800;
  const float sin_a = a + a * (a2 * (s3 + a2 * (s5 + a2 * (s7 + a2 * s9))));
  const float cos_a = 1.0f + a2 * (-0.5f + a2 * (c4 + a2 * (c6 + a2 * (c8 + a2 * c10))));
  const float sin_r = (q & 1u) ? cos_a : sin_a;
  const float cos_r = (q & 1u) ? sin_a : cos_a;
  even = r * (((q + 1u) & 2u) ? -cos_r : cos_r);
  odd = r * ((q & 2u) ? -sin_r : sin_r);
}

FC_HOST_DEVICE FC_INLINE void values32_from_block(const Philox4& block, Dist dist, float out[4]) {
  if (dist == Dist::kUniform32) {
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = uniform32_from_bits(block.v[i]);
  } else {
    normal32_pair_from_bits(block.v[0], block.v[1], out[0], out[1]);
    normal32_pair_from_bits(block.v[2], block.v[3], out[2], out[3]);
  }
}

FC_HOST_DEVICE FC_INLINE void values_from_block(const Philox4& block, Dist dist, double out[4]) {
  switch (dist) {
    case Dist::kUniform32:
    case Dist::kNormal32: {
      float values[4];
      values32_from_block(block, dist, values);
#pragma unroll
      for (int i = 0; i < 4; ++i) out[i] = values[i];
      break;
    }
    case Dist::kUniform:
#pragma unroll
      for (int i = 0; i < 4; ++i) out[i] = uniform_from_bits(block.v[i]);
      break;
    case Dist::kRademacher:
#pragma unroll
      for (int i = 0; i < 4; ++i) out[i] = rademacher_from_bits(block.v[i]);
      break;
    case Dist::kNormal:
      normal_pair_from_bits(block.v[0], block.v[1], out[0], out[1]);
      normal_pair_from_bits(block.v[2], block.v[3], out[2], out[3]);
      break;
  }
}

// Entry (row, col) of the feedback matrix for `seed` is lane col % 4 of the Philox block at
// counter (col / 4, row) under key seed; it does not depend on the matrix's size.
FC_HOST_DEVICE FC_INLINE Philox4 feedback_block(uint64_t seed, uint64_t row, uint64_t col_group) {
  const Philox4 counter{{static_cast<uint32_t>(col_group), static_cast<uint32_t>(col_group >> 32),
                         static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32)}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// value * scale: in FP64 for the FP64 dists; in float32 (scale rounded to float32 first) for
// the float32 dists, whose values and products are exact in double.
FC_HOST_DEVICE FC_INLINE double scaled_value(double value, Dist dist, double scale) {
  if (is_float32_dist(dist)) return static_cast<float>(value) * static_cast<float>(scale);
  return exact::mul(value, scale);
}

// The four consecutive entries (row, 4g .. 4g+3), already multiplied by `scale`. The float32
// dists take no FP64 arithmetic: their float -> double -> float round trips are exact.
FC_HOST_DEVICE FC_INLINE void feedback_group(uint64_t seed, uint64_t row, uint64_t col_group,
                                             Dist dist, double scale, double out[4]) {
  values_from_block(feedback_block(seed, row, col_group), dist, out);
#pragma unroll
  for (int i = 0; i < 4; ++i) out[i] = scaled_value(out[i], dist, scale);
}

}  // namespace fastcredit
