// CPU kernel of LRA-E's error units (csrc/fastcredit/lra_error.h), one pass over the layer.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/tanh.h>

#include "cpu/kernels.h"
#include "fastcredit/lra_error.h"

namespace fastcredit::cpu {

namespace {

constexpr int64_t kGrain = 16384;

// tanh and sigmoid: in one fused pass, libm's scalar tanh/exp cost ~10x ATen's vectorised
// tanh/sigmoid per entry (27 vs 2.7 ns, 128 x 1024 float32, 1 thread), so on the CPU f(a) and
// f(a - beta d) come from ATen and one pass forms e from them (f' from f(a): 1 - y^2, y(1 - y),
// as PyTorch's backward computes it). The CUDA kernel stays one pass.
at::Tensor lra_error_transcendental(const at::Tensor& a, const at::Tensor& d, double beta,
                                    Activation activation, LocalError error, bool use_fprime) {
  const auto acc_type = a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor a_acc = a.to(acc_type);
  const at::Tensor d_acc = d.to(acc_type);
  at::Tensor moved = at::empty_like(a_acc);
  const auto f = [&](const at::Tensor& x) {
    return activation == Activation::kTanh ? at::tanh(x) : at::sigmoid(x);
  };
  at::Tensor out = at::empty_like(a);
  AT_DISPATCH_FLOATING_TYPES(acc_type, "lra_error", [&] {
    const scalar_t* a_ptr = a_acc.const_data_ptr<scalar_t>();
    const scalar_t* d_ptr = d_acc.const_data_ptr<scalar_t>();
    scalar_t* moved_ptr = moved.data_ptr<scalar_t>();
    const auto b = static_cast<scalar_t>(beta);
    at::parallel_for(0, a.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) moved_ptr[i] = a_ptr[i] - b * d_ptr[i];
    });
    const at::Tensor z = f(a_acc);
    const at::Tensor target = f(moved);
    const scalar_t* z_ptr = z.const_data_ptr<scalar_t>();
    const scalar_t* y_ptr = target.const_data_ptr<scalar_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "lra_error", [&] {
      using out_t = scalar_t;
      out_t* out_ptr = out.data_ptr<out_t>();
      at::parallel_for(0, a.numel(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const auto z_i = z_ptr[i];
          const auto diff = z_i - y_ptr[i];
          auto e = error == LocalError::kCauchy ? decltype(diff)(2) * diff / (1 + diff * diff)
                                                : diff;
          if (use_fprime) {
            e *= activation == Activation::kTanh
                     ? activation_grad_from_output<Activation::kTanh>(z_i, decltype(z_i)(0))
                     : activation_grad_from_output<Activation::kSigmoid>(z_i, decltype(z_i)(0));
          }
          out_ptr[i] = static_cast<out_t>(e);
        }
      });
    });
  });
  return out;
}

}  // namespace

at::Tensor lra_error(const at::Tensor& pre_activation, const at::Tensor& displacement,
                     double beta, Activation activation, LocalError error, bool use_fprime,
                     double negative_slope, Surrogate surrogate) {
  if (surrogate == Surrogate::kNone &&
      (activation == Activation::kTanh || activation == Activation::kSigmoid)) {
    return lra_error_transcendental(pre_activation.contiguous(), displacement.contiguous(), beta,
                                    activation, error, use_fprime);
  }
  const at::Tensor a = pre_activation.contiguous();
  const at::Tensor d = displacement.contiguous();
  at::Tensor out = at::empty_like(a, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "lra_error", [&] {
    using opmath_t = at::opmath_type<scalar_t>;  // half precision computes in float
    const scalar_t* a_ptr = a.const_data_ptr<scalar_t>();
    const scalar_t* d_ptr = d.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    const auto b = static_cast<opmath_t>(beta);
    const auto slope = static_cast<opmath_t>(negative_slope);
    dispatch_activation(activation, [&](auto act) {
      dispatch_local_error(error, [&](auto err) {
        constexpr Activation A = decltype(act)::value;
        constexpr LocalError E = decltype(err)::value;
        at::parallel_for(0, a.numel(), kGrain, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            out_ptr[i] = static_cast<scalar_t>(lra_error_unit<A, E, opmath_t>(
                a_ptr[i], d_ptr[i], b, slope, use_fprime, surrogate));
          }
        });
      });
    });
  });
  return out;
}

}  // namespace fastcredit::cpu
