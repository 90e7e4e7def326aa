// CPU generation of seeded feedback row segments (see feedback_rows.h).
//
// Compiled for AVX-512 (x86-64-v4) and AVX2 next to the baseline ISA (GCC function
// multiversioning picks one at load time): the Box-Muller loop only vectorises with AVX2's
// int32 -> double conversions, and Philox's 64-bit products only pay off with 512-bit vectors.
// -ffp-contract=off keeps FMA out of every version, so all of them give philox.h's bits.
#include "cpu/feedback_rows.h"


namespace fastcredit::cpu {
namespace {

#define FC_CPU_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))

// philox.h's normal_pair_from_bits over arrays: with it inlined (no branch, no data-dependent
// loop) the loop vectorises, and the bits are philox.h's own.
FC_CPU_MULTIVERSION void normal_pairs(const uint32_t* __restrict__ radius_words,
                  const uint32_t* __restrict__ angle_words, int64_t pairs,
                  double* __restrict__ even, double* __restrict__ odd) {
  for (int64_t p = 0; p < pairs; ++p) {
    normal_pair_from_bits(radius_words[p], angle_words[p], even[p], odd[p]);
  }
}

}  // namespace

FC_CPU_MULTIVERSION void feedback_row_values(uint64_t seed, Dist dist, double scale,
                                             uint64_t row, int64_t col0, int64_t count,
                                             double* values) {
  const int64_t first_group = col0 / 4;
  const int64_t groups = (col0 + count - 1) / 4 - first_group + 1;
  const int64_t skip = col0 - first_group * 4;  // entries of the first block before col0
  constexpr int64_t kGroupsMax = kSegmentColumns / 4 + 2;
  // words[lane][g]: lane `lane` of block g. philox4x32_10 with the blocks side by side: each
  // round is one loop over the blocks, which vectorises (64-bit products of 32-bit lanes).
  uint32_t words[4][kGroupsMax];
  uint32_t* c0 = words[0];
  uint32_t* c1 = words[1];
  uint32_t* c2 = words[2];
  uint32_t* c3 = words[3];
  for (int64_t g = 0; g < groups; ++g) {
    const uint64_t group = static_cast<uint64_t>(first_group + g);
    c0[g] = static_cast<uint32_t>(group);
    c1[g] = static_cast<uint32_t>(group >> 32);
    c2[g] = static_cast<uint32_t>(row);
    c3[g] = static_cast<uint32_t>(row >> 32);
  }
  uint32_t key0 = static_cast<uint32_t>(seed);
  uint32_t key1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    for (int64_t g = 0; g < groups; ++g) {
      const uint64_t p0 = static_cast<uint64_t>(philox_detail::kMul0) * c0[g];
      const uint64_t p1 = static_cast<uint64_t>(philox_detail::kMul1) * c2[g];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[g] ^ key0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[g] ^ key1;
      c1[g] = static_cast<uint32_t>(p1);
      c3[g] = static_cast<uint32_t>(p0);
      c0[g] = n0;
      c2[g] = n2;
    }
    key0 += philox_detail::kWeyl0;
    key1 += philox_detail::kWeyl1;
  }
  double raw[4][kGroupsMax];  // raw[lane][g]: entry 4 g + lane of the segment's blocks
  switch (dist) {
    case Dist::kUniform:
      for (int lane = 0; lane < 4; ++lane)
        for (int64_t g = 0; g < groups; ++g) raw[lane][g] = uniform_from_bits(words[lane][g]);
      break;
    case Dist::kRademacher:
      for (int lane = 0; lane < 4; ++lane)
        for (int64_t g = 0; g < groups; ++g) raw[lane][g] = rademacher_from_bits(words[lane][g]);
      break;
    case Dist::kNormal:  // Box-Muller on words (0, 1) and (2, 3) of each block
      normal_pairs(words[0], words[1], groups, raw[0], raw[1]);
      normal_pairs(words[2], words[3], groups, raw[2], raw[3]);
      break;
    case Dist::kUniform32:
      for (int lane = 0; lane < 4; ++lane)
        for (int64_t g = 0; g < groups; ++g) raw[lane][g] = uniform32_from_bits(words[lane][g]);
      break;
    case Dist::kNormal32:
      for (int pair = 0; pair < 2; ++pair) {
        for (int64_t g = 0; g < groups; ++g) {
          float even, odd;
          normal32_pair_from_bits(words[2 * pair][g], words[2 * pair + 1][g], even, odd);
          raw[2 * pair][g] = even;
          raw[2 * pair + 1][g] = odd;
        }
      }
      break;
  }
  for (int64_t j = 0; j < count; ++j) {
    const int64_t i = skip + j;
    values[j] = scaled_value(raw[i % 4][i / 4], dist, scale);
  }
}

}  // namespace fastcredit::cpu
