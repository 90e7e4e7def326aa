// Argument checks at the op boundary, shared by the CPU, CUDA and emulated registrations so
// every backend rejects the same inputs with the same message.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#include "fastcredit/activations.h"
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
  TORCH_CHECK(false, "fastcredit: unknown activation '", name,
              "'; expected one of 'identity', 'tanh', 'sigmoid', 'relu', 'leaky_relu', "
              "'relu6', 'softplus', 'gelu'");
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

inline void check_dfa_backward_epilogue_args(const at::Tensor& grad, const at::Tensor& saved,
                                             Activation activation, double negative_slope,
                                             bool saved_is_output) {
  constexpr const char* op = "dfa_backward_epilogue";
  TORCH_CHECK(grad.dim() == 2, op, ": grad must be 2-D [N, D], got ", grad.dim(),
              "-D tensor of shape ", grad.sizes());
  TORCH_CHECK(grad.sizes() == saved.sizes(), op,
              ": grad and saved must have the same shape, got ", grad.sizes(), " and ",
              saved.sizes());
  check_floating(grad, op, "grad");
  TORCH_CHECK(grad.scalar_type() == saved.scalar_type(), op,
              ": grad and saved must have the same dtype, got ", grad.scalar_type(), " and ",
              saved.scalar_type());
  TORCH_CHECK(grad.device() == saved.device(), op,
              ": grad and saved must be on the same device, got ", grad.device(), " and ",
              saved.device());
  TORCH_CHECK(std::isfinite(negative_slope), op, ": negative_slope must be finite, got ",
              negative_slope);
  TORCH_CHECK(!saved_is_output || grad_from_output_supported(activation, negative_slope), op,
              ": this activation's derivative cannot be computed from its output "
              "(saved_is_output=True); pass the pre-activation (softplus, gelu, and "
              "leaky_relu with a negative slope need it)");
}

}  // namespace fastcredit
