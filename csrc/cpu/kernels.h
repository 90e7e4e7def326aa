// CPU implementations of fastcredit's ops (arguments already checked by csrc/ops.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "fastcredit/philox.h"

namespace fastcredit::cpu {

void feedback_fill(at::Tensor& out, uint64_t seed, Dist dist, double scale);

at::Tensor seeded_project(const at::Tensor& x, uint64_t seed, int64_t cols, Dist dist,
                          double scale, bool transpose);

}  // namespace fastcredit::cpu
