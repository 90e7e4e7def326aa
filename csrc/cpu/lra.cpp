// CPU kernel of LRA-E's error units (csrc/fastcredit/lra_error.h), one pass over the layer.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>

#include "cpu/kernels.h"
#include "fastcredit/lra_error.h"

namespace fastcredit::cpu {

at::Tensor lra_error(const at::Tensor& pre_activation, const at::Tensor& displacement,
                     double beta, Activation activation, LocalError error, bool use_fprime,
                     double negative_slope) {
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
        at::parallel_for(0, a.numel(), 16384, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            out_ptr[i] = static_cast<scalar_t>(lra_error_unit<A, E, opmath_t>(
                a_ptr[i], d_ptr[i], b, slope, use_fprime));
          }
        });
      });
    });
  });
  return out;
}

}  // namespace fastcredit::cpu
