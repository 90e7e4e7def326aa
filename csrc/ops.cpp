// The fastcredit op library (schemas from schemas.h) and its CPU registrations.
#include <torch/library.h>

#include "checks.h"
#include "cpu/kernels.h"
#include "schemas.h"

namespace fastcredit {
namespace {

void feedback_fill_cpu(at::Tensor& out, int64_t seed, const std::string& dist, double scale) {
  check_feedback_fill_args(out, scale);
  const Dist d = parse_dist(dist, scale, "feedback_fill_");
  cpu::feedback_fill(out, static_cast<uint64_t>(seed), d, scale);
}

at::Tensor seeded_project_cpu(const at::Tensor& x, int64_t seed, int64_t cols,
                              const std::string& dist, double scale, bool transpose) {
  check_seeded_project_args(x, cols, scale);
  const Dist d = parse_dist(dist, scale, "seeded_project");
  return cpu::seeded_project(x, static_cast<uint64_t>(seed), cols, d, scale, transpose);
}

at::Tensor lra_error_cpu(const at::Tensor& a, const at::Tensor& d, double beta,
                         const std::string& activation, const std::string& error,
                         bool use_fprime, double negative_slope,
                         const std::optional<std::string>& surrogate) {
  check_lra_error_args(a, d, beta, negative_slope);
  return cpu::lra_error(a, d, beta, parse_activation(activation), parse_local_error(error),
                        use_fprime, negative_slope, parse_surrogate(surrogate));
}

at::Tensor sign_feedback_cpu(const at::Tensor& weight, const std::string& mode, double scale,
                             const std::optional<at::Tensor>& magnitude, int64_t seed,
                             const std::optional<at::Tensor>& step, const std::string& dist) {
  const SignFeedbackPlan plan =
      plan_sign_feedback(weight, magnitude, mode, scale, seed, step, dist);
  return cpu::sign_feedback(weight, magnitude.value_or(at::Tensor()), plan.kind, plan.seed,
                            plan.dist, scale);
}

std::tuple<at::Tensor, at::Tensor> dfa_backward_epilogue_cpu(const at::Tensor& grad,
                                                             const at::Tensor& saved,
                                                             const std::string& activation,
                                                             double negative_slope,
                                                             bool saved_is_output) {
  const Activation act = parse_activation(activation);
  check_dfa_backward_epilogue_args(grad, saved, act, negative_slope, saved_is_output);
  return cpu::dfa_backward_epilogue(grad, saved, act, negative_slope, saved_is_output);
}

}  // namespace

TORCH_LIBRARY(fastcredit, m) { define_op_schemas(m); }

TORCH_LIBRARY_IMPL(fastcredit, CPU, m) {
  m.impl("feedback_fill_", &feedback_fill_cpu);
  m.impl("seeded_project", &seeded_project_cpu);
  m.impl("lra_error", &lra_error_cpu);
  m.impl("sign_feedback", &sign_feedback_cpu);
  m.impl("dfa_backward_epilogue", &dfa_backward_epilogue_cpu);
}

}  // namespace fastcredit
