// Tensor-level glue over the CUDA launchers, shared by the real CUDA registration
// (csrc/ops_cuda.cpp) and the emulated one used by the tests, so both run the same checks,
// allocations and dtype handling. The caller picks the device and stream.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <tuple>

#include "checks.h"
#include "cuda/launchers.h"

namespace fastcredit::device {

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// Kernels exist for float32 and float64; half-precision tensors go through float32.
inline bool has_kernel_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

inline void feedback_fill(at::Tensor& out, int64_t seed, const std::string& dist, double scale,
                          cudaStream_t stream) {
  check_feedback_fill_args(out, scale);
  const Dist d = parse_dist(dist);
  if (!has_kernel_dtype(out)) {
    at::Tensor staged = at::empty(out.sizes(), out.options().dtype(at::kFloat));
    feedback_fill(staged, seed, dist, scale, stream);
    out.copy_(staged);
    return;
  }
  const auto s = static_cast<uint64_t>(seed);
  cudaError_t err;
  if (out.scalar_type() == at::kDouble) {
    err = cuda::launch_feedback_fill(out.data_ptr<double>(), out.size(0), out.size(1),
                                     out.stride(0), out.stride(1), s, d, scale, stream);
  } else {
    err = cuda::launch_feedback_fill(out.data_ptr<float>(), out.size(0), out.size(1),
                                     out.stride(0), out.stride(1), s, d, scale, stream);
  }
  check_launch(err, "feedback_fill_");
}

inline at::Tensor seeded_project(const at::Tensor& x, int64_t seed, int64_t cols,
                                 const std::string& dist, double scale, bool transpose,
                                 cudaStream_t stream) {
  check_seeded_project_args(x, cols, scale);
  const Dist d = parse_dist(dist);
  TORCH_CHECK(cols <= cuda::kSeededProjectMaxCols, "seeded_project: cols = ", cols,
              " exceeds the CUDA kernel's limit of ", cuda::kSeededProjectMaxCols);
  if (!has_kernel_dtype(x)) {
    return seeded_project(x.to(at::kFloat), seed, cols, dist, scale, transpose, stream)
        .to(x.scalar_type());
  }
  at::Tensor out = at::empty({x.size(0), cols}, x.options());
  const auto s = static_cast<uint64_t>(seed);
  cudaError_t err;
  if (x.scalar_type() == at::kDouble) {
    err = cuda::launch_seeded_project(x.data_ptr<double>(), x.size(0), x.size(1), x.stride(0),
                                      x.stride(1), out.data_ptr<double>(), cols, s, d, scale,
                                      transpose, stream);
  } else {
    err = cuda::launch_seeded_project(x.data_ptr<float>(), x.size(0), x.size(1), x.stride(0),
                                      x.stride(1), out.data_ptr<float>(), cols, s, d, scale,
                                      transpose, stream);
  }
  check_launch(err, "seeded_project");
  return out;
}

inline at::Tensor lra_error(const at::Tensor& pre_activation, const at::Tensor& displacement,
                            double beta, const std::string& activation, const std::string& error,
                            bool use_fprime, double negative_slope, cudaStream_t stream) {
  check_lra_error_args(pre_activation, displacement, beta, negative_slope);
  const Activation act = parse_activation(activation);
  const LocalError err = parse_local_error(error);
  if (!has_kernel_dtype(pre_activation)) {
    return lra_error(pre_activation.to(at::kFloat), displacement.to(at::kFloat), beta,
                     activation, error, use_fprime, negative_slope, stream)
        .to(pre_activation.scalar_type());
  }
  const at::Tensor a = pre_activation.contiguous();
  const at::Tensor d = displacement.contiguous();
  at::Tensor out = at::empty_like(a, at::MemoryFormat::Contiguous);
  cudaError_t status;
  if (a.scalar_type() == at::kDouble) {
    status = cuda::launch_lra_error(a.const_data_ptr<double>(), d.const_data_ptr<double>(),
                                    out.data_ptr<double>(), a.numel(), beta, act, err, use_fprime,
                                    negative_slope, stream);
  } else {
    status = cuda::launch_lra_error(a.const_data_ptr<float>(), d.const_data_ptr<float>(),
                                    out.data_ptr<float>(), a.numel(), beta, act, err, use_fprime,
                                    negative_slope, stream);
  }
  check_launch(status, "lra_error");
  return out;
}

inline at::Tensor sign_feedback(const at::Tensor& weight, const std::string& mode, double scale,
                                const std::optional<at::Tensor>& magnitude, int64_t seed,
                                const std::optional<at::Tensor>& step, const std::string& dist, cudaStream_t stream) {
  const SignFeedbackPlan plan =
      plan_sign_feedback(weight, magnitude, mode, scale, seed, step, dist);
  if (!has_kernel_dtype(weight)) {
    std::optional<at::Tensor> staged_magnitude;
    if (plan.kind == Magnitude::kStored) staged_magnitude = magnitude->to(at::kFloat);
    return sign_feedback(weight.to(at::kFloat), mode, scale, staged_magnitude, seed, step, dist,
                         stream)
        .to(weight.scalar_type());
  }
  const at::Tensor w = weight.contiguous();
  const at::Tensor m = plan.kind == Magnitude::kStored ? magnitude->contiguous() : at::Tensor();
  at::Tensor out = at::empty(w.sizes(), w.options());
  const int64_t rows = w.size(0);
  const int64_t cols = rows == 0 ? 0 : w.numel() / rows;
  cudaError_t err;
  if (w.scalar_type() == at::kDouble) {
    err = cuda::launch_sign_feedback(w.data_ptr<double>(),
                                     m.defined() ? m.data_ptr<double>() : nullptr,
                                     out.data_ptr<double>(), rows, cols, plan.kind, plan.seed,
                                     plan.dist, scale, stream);
  } else {
    err = cuda::launch_sign_feedback(w.data_ptr<float>(),
                                     m.defined() ? m.data_ptr<float>() : nullptr,
                                     out.data_ptr<float>(), rows, cols, plan.kind, plan.seed,
                                     plan.dist, scale, stream);
  }
  check_launch(err, "sign_feedback");
  return out;
}

inline std::tuple<at::Tensor, at::Tensor> dfa_backward_epilogue(const at::Tensor& grad,
                                                                const at::Tensor& saved,
                                                                const std::string& activation,
                                                                double negative_slope,
                                                                bool saved_is_output,
                                                                cudaStream_t stream) {
  const Activation act = parse_activation(activation);
  check_dfa_backward_epilogue_args(grad, saved, act, negative_slope, saved_is_output);
  if (!has_kernel_dtype(grad)) {
    auto [delta, grad_bias] =
        dfa_backward_epilogue(grad.to(at::kFloat), saved.to(at::kFloat), activation,
                              negative_slope, saved_is_output, stream);
    return {delta.to(grad.scalar_type()), grad_bias.to(grad.scalar_type())};
  }
  const int64_t n = grad.size(0);
  const int64_t d = grad.size(1);
  at::Tensor delta = at::empty({n, d}, grad.options());
  at::Tensor grad_bias = at::empty({d}, grad.options());
  at::Tensor workspace = at::empty({cuda::dfa_epilogue_workspace_size(n, d)}, grad.options());
  cudaError_t err;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "dfa_backward_epilogue", [&] {
    err = cuda::launch_dfa_backward_epilogue(
        grad.const_data_ptr<scalar_t>(), grad.stride(0), grad.stride(1),
        saved.const_data_ptr<scalar_t>(), saved.stride(0), saved.stride(1), n, d, act,
        negative_slope, saved_is_output, delta.mutable_data_ptr<scalar_t>(),
        grad_bias.mutable_data_ptr<scalar_t>(), workspace.mutable_data_ptr<scalar_t>(), stream);
  });
  check_launch(err, "dfa_backward_epilogue");
  return {delta, grad_bias};
}

}  // namespace fastcredit::device
