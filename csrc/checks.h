// Argument checks at the op boundary, shared by the CPU, CUDA and emulated registrations so
// every backend rejects the same inputs with the same message.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>

#include "fastcredit/activations.h"
#include "fastcredit/lra_error.h"
#include "fastcredit/philox.h"
#include "fastcredit/sign_feedback.h"

namespace fastcredit {

// The generator `name`, checked with the op's (finite) scale: the float32 dists multiply by
// scale in float32, so it must be within float32's range.
inline Dist parse_dist(const std::string& name, double scale, const char* op) {
  Dist dist;
  if (name == "uniform") {
    dist = Dist::kUniform;
  } else if (name == "normal") {
    dist = Dist::kNormal;
  } else if (name == "rademacher") {
    dist = Dist::kRademacher;
  } else if (name == "uniform32") {
    dist = Dist::kUniform32;
  } else if (name == "normal32") {
    dist = Dist::kNormal32;
  } else {
    TORCH_CHECK(false, "fastcredit: unknown dist '", name, "'; expected one of 'uniform', ",
                "'normal', 'rademacher', 'uniform32', 'normal32'");
  }
  TORCH_CHECK(!is_float32_dist(dist) || std::fabs(scale) <= std::numeric_limits<float>::max(),
              op, ": scale must be within float32's range for dist '", name, "', got ", scale);
  return dist;
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

// Whether two entries of a 2-D strided view share an address. Entries (i, j) and (i', j')
// coincide iff (i - i') s0 = (j' - j) s1, whose smallest solution with i != i' is
// (s1 / g, s0 / g), g = gcd(s0, s1); it lies inside the view iff s1 / g < n0 and s0 / g < n1.
// Exact for every layout, including interleaved non-overlapping ones like sizes (3, 2) with
// strides (2, 3).
inline bool has_self_overlap_2d(const at::Tensor& t) {
  const int64_t n0 = t.size(0), n1 = t.size(1);
  const int64_t s0 = t.stride(0), s1 = t.stride(1);  // torch strides are >= 0
  if (n0 == 0 || n1 == 0) return false;
  if ((n0 > 1 && s0 == 0) || (n1 > 1 && s1 == 0)) return true;
  if (n0 == 1 || n1 == 1) return false;
  const int64_t g = std::gcd(s0, s1);
  return s1 / g < n0 && s0 / g < n1;
}

inline void check_feedback_fill_args(const at::Tensor& out, double scale) {
  TORCH_CHECK(out.dim() == 2, "feedback_fill_: out must be 2-D [rows, cols], got ", out.dim(),
              "-D tensor of shape ", out.sizes());
  check_floating(out, "feedback_fill_", "out");
  // Entries that share memory would receive different values: the result would depend on
  // the write order (threads, device).
  TORCH_CHECK(!has_self_overlap_2d(out), "feedback_fill_: out must not overlap itself, got ",
              "shape ", out.sizes(), " with strides ", out.strides(),
              " (an expanded or as_strided view); fill a distinct tensor and copy it");
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

inline Surrogate parse_surrogate(const std::optional<std::string>& name) {
  if (!name.has_value()) return Surrogate::kNone;
  if (*name == "hardtanh") return Surrogate::kHardtanh;
  TORCH_CHECK(false, "lra_error: unknown surrogate '", *name, "'; expected None or 'hardtanh'");
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

// What sign_feedback's kernels are asked to build, resolved from the op's arguments.
struct SignFeedbackPlan {
  Magnitude kind;
  uint64_t seed;  // for kSeeded; already mixed with the step for mode 'seeded_step'
  Dist dist;
};

// Checks sign_feedback's arguments and resolves its mode: 'scalar' (|M| = 1), 'stored'
// (|M| = |magnitude|), 'seeded' (|M| = |F(seed)|) or 'seeded_step' (|M| = |F(step_seed(seed,
// step))|, a fresh matrix per step).
inline SignFeedbackPlan plan_sign_feedback(const at::Tensor& weight,
                                           const std::optional<at::Tensor>& magnitude,
                                           const std::string& mode, double scale, int64_t seed,
                                           const std::optional<at::Tensor>& step,
                                           const std::string& dist) {
  TORCH_CHECK(weight.dim() >= 2, "sign_feedback: weight must have at least 2 dims [out, in, ",
              "*kernel], got ", weight.dim(), "-D tensor of shape ", weight.sizes());
  check_floating(weight, "sign_feedback", "weight");
  TORCH_CHECK(std::isfinite(scale), "sign_feedback: scale must be finite, got ", scale);
  const Dist d = parse_dist(dist, scale, "sign_feedback");
  const bool has_magnitude = magnitude.has_value() && magnitude->defined();
  if (mode == "stored") {
    TORCH_CHECK(has_magnitude, "sign_feedback: mode 'stored' needs a magnitude tensor");
    TORCH_CHECK(magnitude->sizes() == weight.sizes(), "sign_feedback: magnitude must have ",
                "weight's shape ", weight.sizes(), ", got ", magnitude->sizes());
    TORCH_CHECK(magnitude->scalar_type() == weight.scalar_type(), "sign_feedback: magnitude ",
                "must have weight's dtype ", weight.scalar_type(), ", got ",
                magnitude->scalar_type());
    TORCH_CHECK(magnitude->device() == weight.device(), "sign_feedback: magnitude must be on ",
                "weight's device ", weight.device(), ", got ", magnitude->device());
    return {Magnitude::kStored, 0, d};
  }
  TORCH_CHECK(mode == "scalar" || mode == "seeded" || mode == "seeded_step",
              "sign_feedback: unknown mode '", mode,
              "'; expected one of 'scalar', 'stored', 'seeded', 'seeded_step'");
  TORCH_CHECK(!has_magnitude, "sign_feedback: a magnitude tensor is only read in mode ",
              "'stored', got one with mode '", mode, "'");
  if (mode == "scalar") return {Magnitude::kScalar, 0, d};
  const auto s = static_cast<uint64_t>(seed);
  if (mode == "seeded") return {Magnitude::kSeeded, s, d};
  TORCH_CHECK(step.has_value() && step->defined(),
              "sign_feedback: mode 'seeded_step' needs a step tensor");
  TORCH_CHECK(step->numel() == 1 && step->dim() == 0 && step->scalar_type() == at::kLong,
              "sign_feedback: step must be a 0-d int64 tensor, got ", step->scalar_type(),
              " of shape ", step->sizes());
  // A CPU counter is read without a device synchronisation; one on the device costs a sync.
  const int64_t draw = step->item<int64_t>();
  TORCH_CHECK(draw >= 0, "sign_feedback: step must be non-negative, got ", draw);
  return {Magnitude::kSeeded, step_seed(s, static_cast<uint64_t>(draw)), d};
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
