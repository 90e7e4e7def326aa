// CPU generation of seeded feedback entries a row segment at a time (csrc/cpu/feedback_rows.cpp).
// The per-entry formula is philox.h's (the CUDA kernels use the same one, so the bits agree);
// what the CPU version adds is a loop shape the compiler can keep busy.
#pragma once

#include <cstdint>

#include "fastcredit/philox.h"

namespace fastcredit::cpu {

// Columns generated per call of feedback_row_values: 64 Philox blocks, 2 KiB of doubles.
constexpr int64_t kSegmentColumns = 256;

// values[j] = scale * F(seed)[row, col0 + j] for 0 <= j < count <= kSegmentColumns.
void feedback_row_values(uint64_t seed, Dist dist, double scale, uint64_t row, int64_t col0,
                         int64_t count, double* values);

}  // namespace fastcredit::cpu
