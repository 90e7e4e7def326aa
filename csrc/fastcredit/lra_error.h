// LRA-E's per-unit rule (Ororbia & Mali 2019), host+device clean so the CPU and CUDA kernels
// share it: from the pre-activation a and the displacement d sent from above, the target is
// y = f(a - beta d) and the error unit compares f(a) with it. With a surrogate s (for
// activations whose derivative is zero almost everywhere, such as sign) both sides go through
// s instead: y = s(a - beta d), e = s(a) - y; the forward still outputs f(a). The surrogate is
// fastcredit's implementation choice, not a rule verified in the LRA papers.
#pragma once

#include <type_traits>

#include "activations.h"
#include "macros.h"

namespace fastcredit {

enum class LocalError : int {
  kGaussian = 0,  // e = z - y, the gradient of 0.5 ||z - y||^2
  kCauchy = 1,    // e = 2 (z - y) / (1 + (z - y)^2), the gradient of log(1 + (z - y)^2)
};

enum class Surrogate : int {
  kNone = 0,      // targets through f itself (LRA-E's rule)
  kHardtanh = 1,  // s(x) = clamp(x, -1, 1), whose derivative is the one fastcredit uses for sign
};

template <Activation A, typename T>
FC_HOST_DEVICE FC_INLINE T lra_target_value(T x, T slope, Surrogate surrogate) {
  if (surrogate == Surrogate::kHardtanh) return x < T(-1) ? T(-1) : (x > T(1) ? T(1) : x);
  return activation_value<A>(x, slope);
}

template <Activation A, LocalError E, typename T>
FC_HOST_DEVICE FC_INLINE T lra_error_unit(T a, T d, T beta, T slope, bool use_fprime,
                                          Surrogate surrogate) {
  const T diff = lra_target_value<A>(a, slope, surrogate) -
                 lra_target_value<A>(a - beta * d, slope, surrogate);
  T e = diff;
  if constexpr (E == LocalError::kCauchy) e = T(2) * diff / (T(1) + diff * diff);
  // LRA-E's Hebbian update omits f'(a); the v1 local-loss gradient (use_fprime) keeps it
  // (f' as everywhere in fastcredit: sign's is 1{|a| <= 1}, with or without a surrogate).
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
