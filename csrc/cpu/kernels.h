// CPU implementations of fastcredit's ops (arguments already checked by csrc/ops.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "fastcredit/activations.h"
#include "fastcredit/lra_error.h"
#include <tuple>

#include "fastcredit/activations.h"
#include "fastcredit/philox.h"
#include "fastcredit/sign_feedback.h"

namespace fastcredit::cpu {

void feedback_fill(at::Tensor& out, uint64_t seed, Dist dist, double scale);

at::Tensor seeded_project(const at::Tensor& x, uint64_t seed, int64_t cols, Dist dist,
                          double scale, bool transpose);

at::Tensor lra_error(const at::Tensor& pre_activation, const at::Tensor& displacement,
                     double beta, Activation activation, LocalError error, bool use_fprime,
                     double negative_slope, Surrogate surrogate);
// |M| ⊙ sign(W) with W's shape (contiguous); `magnitude` is read only for Magnitude::kStored.
at::Tensor sign_feedback(const at::Tensor& weight, const at::Tensor& magnitude, Magnitude kind,
                         uint64_t seed, Dist dist, double scale);
// (grad * f'(a), column sums of that): [N, D] (contiguous) and [D]; f' from `saved`, which is
// a or, when saved_is_output, f(a).
std::tuple<at::Tensor, at::Tensor> dfa_backward_epilogue(const at::Tensor& grad,
                                                         const at::Tensor& saved,
                                                         Activation activation,
                                                         double negative_slope,
                                                         bool saved_is_output);

}  // namespace fastcredit::cpu
