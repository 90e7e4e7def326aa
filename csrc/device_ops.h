// Tensor-level glue over the CUDA launchers, shared by the real CUDA registration
// (csrc/ops_cuda.cpp) and the emulated one used by the tests, so both run the same checks,
// allocations and dtype handling.
//
// `Context` is the device side of a call: `Context ctx(device)` makes `device` current (a
// CUDAGuard), `ctx.stream()` is the stream to launch on, `ctx.max_grid_y()` the grid.y limit.
// Each op checks its arguments, devices included, before it builds the context: CUDA outranks
// CPU in dispatch, so a mixed-device call reaches these functions, and a CUDAGuard built from a
// CPU tensor fails with an internal assert instead of the op's own message. The context's
// device is that of the op's first tensor; the checks compare the others with it (a 0-d CPU
// tensor, a host scalar, may be left out of that comparison, as torch's own ops allow).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <tuple>

#include "checks.h"
#include "cuda/half_types.h"
#include "cuda/launchers.h"

namespace fastcredit::device {

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// The launchers' element type for a torch element type: CUDA's half types for torch's (same
// bits); the emulated build uses torch's own.
template <typename T>
struct KernelTypeOf {
  using type = T;
};
template <>
struct KernelTypeOf<at::Half> {
  using type = cuda::Half;
};
template <>
struct KernelTypeOf<at::BFloat16> {
  using type = cuda::BFloat16;
};

template <typename T>
const typename KernelTypeOf<T>::type* kernel_data(const at::Tensor& t) {
  return reinterpret_cast<const typename KernelTypeOf<T>::type*>(t.const_data_ptr<T>());
}
template <typename T>
typename KernelTypeOf<T>::type* kernel_data(at::Tensor& t) {
  return reinterpret_cast<typename KernelTypeOf<T>::type*>(t.mutable_data_ptr<T>());
}

// The seeded kernels exist for float32 and float64; half-precision tensors go through
// float32 (they are bound by FP64 generation, not by memory).
inline bool has_seeded_kernel_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

template <typename Context>
void feedback_fill(at::Tensor& out, int64_t seed, const std::string& dist, double scale) {
  check_feedback_fill_args(out, scale);
  const Dist d = parse_dist(dist, scale, "feedback_fill_");
  const Context ctx(out.device());
  if (!has_seeded_kernel_dtype(out)) {
    at::Tensor staged = at::empty(out.sizes(), out.options().dtype(at::kFloat));
    feedback_fill<Context>(staged, seed, dist, scale);
    out.copy_(staged);
    return;
  }
  const auto s = static_cast<uint64_t>(seed);
  cudaError_t err;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "feedback_fill_", [&] {
    err = cuda::launch_feedback_fill(out.mutable_data_ptr<scalar_t>(), out.size(0), out.size(1),
                                     out.stride(0), out.stride(1), s, d, scale, ctx.stream());
  });
  check_launch(err, "feedback_fill_");
}

template <typename Context>
at::Tensor seeded_project(const at::Tensor& x, int64_t seed, int64_t cols,
                          const std::string& dist, double scale, bool transpose) {
  check_seeded_project_args(x, cols, scale);
  const Dist d = parse_dist(dist, scale, "seeded_project");
  const Context ctx(x.device());
  if (!has_seeded_kernel_dtype(x)) {
    return seeded_project<Context>(x.to(at::kFloat), seed, cols, dist, scale, transpose)
        .to(x.scalar_type());
  }
  at::Tensor out = at::empty({x.size(0), cols}, x.options());
  const auto s = static_cast<uint64_t>(seed);
  cudaError_t err;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seeded_project", [&] {
    err = cuda::launch_seeded_project(x.const_data_ptr<scalar_t>(), x.size(0), x.size(1),
                                      x.stride(0), x.stride(1), out.mutable_data_ptr<scalar_t>(),
                                      cols, s, d, scale, transpose, ctx.stream(),
                                      ctx.max_grid_y());
  });
  check_launch(err, "seeded_project");
  return out;
}

template <typename Context>
at::Tensor lra_error(const at::Tensor& pre_activation, const at::Tensor& displacement,
                     double beta, const std::string& activation, const std::string& error,
                     bool use_fprime, double negative_slope,
                     const std::optional<std::string>& surrogate) {
  check_lra_error_args(pre_activation, displacement, beta, negative_slope);
  const Activation act = parse_activation(activation);
  const LocalError err = parse_local_error(error);
  const Surrogate sur = parse_surrogate(surrogate);
  const Context ctx(pre_activation.device());
  const at::Tensor a = pre_activation.contiguous();
  const at::Tensor d = displacement.contiguous();
  at::Tensor out = at::empty_like(a, at::MemoryFormat::Contiguous);
  cudaError_t status;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "lra_error", [&] {
    status = cuda::launch_lra_error(kernel_data<scalar_t>(a), kernel_data<scalar_t>(d),
                                    kernel_data<scalar_t>(out), a.numel(), beta, act, err,
                                    use_fprime, negative_slope, sur, ctx.stream());
  });
  check_launch(status, "lra_error");
  return out;
}

template <typename Context>
at::Tensor sign_feedback(const at::Tensor& weight, const std::string& mode, double scale,
                         const std::optional<at::Tensor>& magnitude, int64_t seed,
                         const std::optional<at::Tensor>& step, const std::string& dist) {
  const SignFeedbackPlan plan =
      plan_sign_feedback(weight, magnitude, mode, scale, seed, step, dist);
  const Context ctx(weight.device());
  const at::Tensor w = weight.contiguous();
  const at::Tensor m = plan.kind == Magnitude::kStored ? magnitude->contiguous() : at::Tensor();
  at::Tensor out = at::empty(w.sizes(), w.options());
  const int64_t rows = w.size(0);
  const int64_t cols = rows == 0 ? 0 : w.numel() / rows;
  cudaError_t err;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "sign_feedback", [&] {
    err = cuda::launch_sign_feedback(kernel_data<scalar_t>(w),
                                     m.defined() ? kernel_data<scalar_t>(m) : nullptr,
                                     kernel_data<scalar_t>(out), rows, cols, plan.kind, plan.seed,
                                     plan.dist, scale, ctx.stream());
  });
  check_launch(err, "sign_feedback");
  return out;
}

template <typename Context>
std::tuple<at::Tensor, at::Tensor> dfa_backward_epilogue(const at::Tensor& grad,
                                                         const at::Tensor& saved,
                                                         const std::string& activation,
                                                         double negative_slope,
                                                         bool saved_is_output) {
  const Activation act = parse_activation(activation);
  check_dfa_backward_epilogue_args(grad, saved, act, negative_slope, saved_is_output);
  const Context ctx(grad.device());
  const int64_t n = grad.size(0);
  const int64_t d = grad.size(1);
  at::Tensor delta = at::empty({n, d}, grad.options());
  at::Tensor grad_bias = at::empty({d}, grad.options());
  at::Tensor workspace = at::empty({cuda::dfa_epilogue_workspace_size(n, d)},
                                   grad.options().dtype(at::toOpMathType(grad.scalar_type())));
  cudaError_t err;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "dfa_backward_epilogue", [&] {
        err = cuda::launch_dfa_backward_epilogue(
            kernel_data<scalar_t>(grad), grad.stride(0), grad.stride(1),
            kernel_data<scalar_t>(saved), saved.stride(0), saved.stride(1), n, d, act,
            negative_slope, saved_is_output, kernel_data<scalar_t>(delta),
            kernel_data<scalar_t>(grad_bias),
            workspace.mutable_data_ptr<at::opmath_type<scalar_t>>(), ctx.stream(),
            ctx.max_grid_y());
      });
  check_launch(err, "dfa_backward_epilogue");
  return {delta, grad_bias};
}

}  // namespace fastcredit::device
