// LRA-E's per-unit rule (Ororbia & Mali 2019), host+device clean so the CPU and CUDA kernels
// share it: from the pre-activation a and the displacement d sent from above, the target is
// y = f(a - beta d) and the error unit compares f(a) with it.
#pragma once

#include <type_traits>

#include "activations.h"
#include "macros.h"

namespace fastcredit {

enum class LocalError : int {
  kGaussian = 0,  // e = z - y, the gradient of 0.5 ||z - y||^2
  kCauchy = 1,    // e = 2 (z - y) / (1 + (z - y)^2), the gradient of log(1 + (z - y)^2)
};

template <Activation A, LocalError E, typename T>
FC_HOST_DEVICE FC_INLINE T lra_error_unit(T a, T d, T beta, T slope, bool use_fprime) {
  const T diff = activation_value<A>(a, slope) - activation_value<A>(a - beta * d, slope);
  T e = diff;
  if constexpr (E == LocalError::kCauchy) e = T(2) * diff / (T(1) + diff * diff);
  // LRA-E's Hebbian update omits f'(a); the v1 local-loss gradient (use_fprime) keeps it.
  if (use_fprime) e *= activation_grad<A>(a, slope);
  return e;
}

template <typename Body>
inline void dispatch_local_error(LocalError e, Body&& body) {
  if (e == LocalError::kGaussian) {
    body(std::integral_constant<LocalError, LocalError::kGaussian>{});
  } else {
    body(std::integral_constant<LocalError, LocalError::kCauchy>{});
  }
}

}  // namespace fastcredit
