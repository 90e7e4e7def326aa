// Argument checks at the op boundary, shared by the CPU, CUDA and emulated registrations so
// every backend rejects the same inputs with the same message.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#include "fastcredit/activations.h"
#include "fastcredit/lra_error.h"
#include "fastcredit/philox.h"

namespace fastcredit {

inline Dist parse_dist(const std::string& name) {
  if (name == "uniform") return Dist::kUniform;
  if (name == "normal") return Dist::kNormal;
  if (name == "rademacher") return Dist::kRademacher;
  TORCH_CHECK(false, "fastcredit: unknown dist '", name,
              "'; expected one of 'uniform', 'normal', 'rademacher'");
}

inline Activation parse_activation(const std::string& name) {
  if (name == "identity") return Activation::kIdentity;
  if (name == "tanh") return Activation::kTanh;
  if (name == "sigmoid") return Activation::kSigmoid;
  if (name == "relu") return Activation::kRelu;
  if (name == "leaky_relu") return Activation::kLeakyRelu;
  if (name == "relu6") return Activation::kRelu6;
  if (name == "softplus") return Activation::kSoftplus;
  if (name == "gelu") return Activation::kGelu;
  if (name == "sign") return Activation::kSign;
  TORCH_CHECK(false, "fastcredit: unknown activation '", name,
              "'; expected one of 'identity', 'tanh', 'sigmoid', 'relu', 'leaky_relu', "
              "'relu6', 'softplus', 'gelu', 'sign'");
}

inline void check_floating(const at::Tensor& t, const char* op, const char* arg) {
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              op, ": ", arg, " must be float32, float64, float16 or bfloat16, got ", dt);
}

inline void check_feedback_fill_args(const at::Tensor& out, double scale) {
  TORCH_CHECK(out.dim() == 2, "feedback_fill_: out must be 2-D [rows, cols], got ", out.dim(),
              "-D tensor of shape ", out.sizes());
  check_floating(out, "feedback_fill_", "out");
  TORCH_CHECK(std::isfinite(scale), "feedback_fill_: scale must be finite, got ", scale);
}

inline void check_seeded_project_args(const at::Tensor& x, int64_t cols, double scale) {
  TORCH_CHECK(x.dim() == 2, "seeded_project: x must be 2-D [N, K], got ", x.dim(),
              "-D tensor of shape ", x.sizes());
  check_floating(x, "seeded_project", "x");
  TORCH_CHECK(cols >= 0, "seeded_project: cols must be non-negative, got ", cols);
  TORCH_CHECK(std::isfinite(scale), "seeded_project: scale must be finite, got ", scale);
}

inline LocalError parse_local_error(const std::string& name) {
  if (name == "gaussian") return LocalError::kGaussian;
  if (name == "cauchy") return LocalError::kCauchy;
  TORCH_CHECK(false, "lra_error: unknown error '", name, "'; expected 'gaussian' or 'cauchy'");
}

inline void check_lra_error_args(const at::Tensor& a, const at::Tensor& d, double beta,
                                 double negative_slope) {
  constexpr const char* op = "lra_error";
  TORCH_CHECK(a.sizes() == d.sizes(), op, ": pre_activation and displacement must have the same "
              "shape, got ", a.sizes(), " and ", d.sizes());
  check_floating(a, op, "pre_activation");
  TORCH_CHECK(a.scalar_type() == d.scalar_type(), op, ": pre_activation and displacement must "
              "have the same dtype, got ", a.scalar_type(), " and ", d.scalar_type());
  TORCH_CHECK(a.device() == d.device(), op, ": pre_activation and displacement must be on the "
              "same device, got ", a.device(), " and ", d.device());
  TORCH_CHECK(std::isfinite(beta), op, ": beta must be finite, got ", beta);
  TORCH_CHECK(std::isfinite(negative_slope), op, ": negative_slope must be finite, got ",
              negative_slope);
}

}  // namespace fastcredit
