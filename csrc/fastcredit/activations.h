// Activation functions f and their derivatives f', host+device clean, so CPU kernels, CUDA
// kernels and the CUDA emulation use the same formulas. The derivatives follow PyTorch's
// backward formulas (including the value at kinks), so a fused backward matches autograd.
#pragma once

#include <math.h>

#include "macros.h"

namespace fastcredit {

// Ops name activations by string (csrc/checks.h parses them); the values are internal.
enum class Activation : int {
  kIdentity = 0,
  kTanh = 1,
  kSigmoid = 2,
  kRelu = 3,
  kLeakyRelu = 4,
  kRelu6 = 5,
  kSoftplus = 6,  // beta = 1, threshold = 20, as torch.nn.functional.softplus's defaults
  kGelu = 7,      // the exact erf form (torch's default approximate='none')
  kSign = 8,      // signum; its "derivative" is the surrogate 1{|x| <= 1} (hardtanh's)
};

namespace activation_detail {
// Explicit float/double overloads: <math.h> alone gives the host only the double versions.
FC_HOST_DEVICE FC_INLINE float tanh_(float x) { return tanhf(x); }
FC_HOST_DEVICE FC_INLINE double tanh_(double x) { return tanh(x); }
FC_HOST_DEVICE FC_INLINE float exp_(float x) { return expf(x); }
FC_HOST_DEVICE FC_INLINE double exp_(double x) { return exp(x); }
FC_HOST_DEVICE FC_INLINE float log1p_(float x) { return log1pf(x); }
FC_HOST_DEVICE FC_INLINE double log1p_(double x) { return log1p(x); }
FC_HOST_DEVICE FC_INLINE float erf_(float x) { return erff(x); }
FC_HOST_DEVICE FC_INLINE double erf_(double x) { return erf(x); }

constexpr double kSoftplusThreshold = 20.0;
constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

template <typename T>
FC_HOST_DEVICE FC_INLINE T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}
template <typename T>
FC_HOST_DEVICE FC_INLINE T normal_cdf(T x) {
  return T(0.5) * (T(1) + erf_(x * T(kSqrtHalf)));
}
}  // namespace activation_detail

// f(x); `slope` is leaky_relu's negative slope and is ignored by the others.
template <Activation A, typename T>
FC_HOST_DEVICE FC_INLINE T activation_value(T x, T slope) {
  using namespace activation_detail;
  if constexpr (A == Activation::kIdentity) return x;
  if constexpr (A == Activation::kTanh) return tanh_(x);
  if constexpr (A == Activation::kSigmoid) return sigmoid(x);
  // NaN and -0 pass through, as in torch.relu
  if constexpr (A == Activation::kRelu) return x < T(0) ? T(0) : x;
  if constexpr (A == Activation::kLeakyRelu) return x > T(0) ? x : x * slope;
  if constexpr (A == Activation::kRelu6) return x < T(0) ? T(0) : (x > T(6) ? T(6) : x);
  if constexpr (A == Activation::kSoftplus)
    return x > T(kSoftplusThreshold) ? x : log1p_(exp_(x));
  if constexpr (A == Activation::kGelu) return x * normal_cdf(x);
  if constexpr (A == Activation::kSign) return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
}

// f'(x) as PyTorch's backward computes it: relu and relu6 have derivative 0 at their kinks
// (relu6 is hardtanh(0, 6): 1 only strictly inside (0, 6)); leaky_relu has `slope` at 0.
template <Activation A, typename T>
FC_HOST_DEVICE FC_INLINE T activation_grad(T x, T slope) {
  using namespace activation_detail;
  if constexpr (A == Activation::kIdentity) return T(1);
  if constexpr (A == Activation::kTanh) {
    const T y = tanh_(x);
    return T(1) - y * y;
  }
  if constexpr (A == Activation::kSigmoid) {
    const T y = sigmoid(x);
    return y * (T(1) - y);
  }
  // Written as PyTorch's threshold/hardtanh backward ("x <= 0 ? 0 : 1"), so f'(NaN) = 1 as there
  if constexpr (A == Activation::kRelu) return x <= T(0) ? T(0) : T(1);
  if constexpr (A == Activation::kLeakyRelu) return x > T(0) ? T(1) : slope;
  if constexpr (A == Activation::kRelu6) return (x <= T(0) || x >= T(6)) ? T(0) : T(1);
  if constexpr (A == Activation::kSoftplus) {
    if (x > T(kSoftplusThreshold)) return T(1);
    const T z = exp_(x);
    return z / (z + T(1));
  }
  if constexpr (A == Activation::kGelu)
    return normal_cdf(x) + x * T(kInvSqrt2Pi) * exp_(T(-0.5) * x * x);
  // sign' is 0 almost everywhere; rules that need f' use the straight-through surrogate.
  if constexpr (A == Activation::kSign) return (x >= T(-1) && x <= T(1)) ? T(1) : T(0);
}

// f' from the output y = f(x) instead of x, as PyTorch's backward does for these: a layer
// keeps y anyway (it is the next layer's input), and no transcendental is recomputed.
// leaky_relu qualifies only for slope >= 0 (then y > 0 exactly when x > 0).
template <Activation A>
inline constexpr bool kGradFromOutput =
    A == Activation::kIdentity || A == Activation::kTanh || A == Activation::kSigmoid ||
    A == Activation::kRelu || A == Activation::kLeakyRelu || A == Activation::kRelu6;

FC_HOST_DEVICE FC_INLINE bool grad_from_output_supported(Activation a, double slope) {
  return a == Activation::kIdentity || a == Activation::kTanh || a == Activation::kSigmoid ||
         a == Activation::kRelu || a == Activation::kRelu6 ||
         (a == Activation::kLeakyRelu && slope >= 0);
}

template <Activation A, typename T>
FC_HOST_DEVICE FC_INLINE T activation_grad_from_output(T y, T slope) {
  static_assert(kGradFromOutput<A>, "this activation's derivative needs its input");
  if constexpr (A == Activation::kIdentity) return T(1);
  if constexpr (A == Activation::kTanh) return T(1) - y * y;
  if constexpr (A == Activation::kSigmoid) return y * (T(1) - y);
  if constexpr (A == Activation::kRelu) return y <= T(0) ? T(0) : T(1);
  if constexpr (A == Activation::kLeakyRelu) return y > T(0) ? T(1) : slope;
  if constexpr (A == Activation::kRelu6) return (y <= T(0) || y >= T(6)) ? T(0) : T(1);
}

// f' of activation A evaluated from what the layer saved: x, or y when kFromOutput.
template <Activation A, bool kFromOutput>
struct ActivationGrad {
  static constexpr Activation activation = A;
  template <typename T>
  FC_HOST_DEVICE FC_INLINE static T at(T saved, T slope) {
    if constexpr (kFromOutput) {
      return activation_grad_from_output<A>(saved, slope);
    } else {
      return activation_grad<A>(saved, slope);
    }
  }
};

template <Activation A>
struct ActivationTag {
  static constexpr Activation value = A;
};

// Calls body(ActivationTag<A>{}) for the runtime value `a`, so kernels are instantiated once
// per activation and the per-element code has no switch. Host only (launchers, CPU kernels).
template <typename Body>
inline void dispatch_activation(Activation a, Body&& body) {
  switch (a) {
    case Activation::kIdentity: body(ActivationTag<Activation::kIdentity>{}); break;
    case Activation::kTanh: body(ActivationTag<Activation::kTanh>{}); break;
    case Activation::kSigmoid: body(ActivationTag<Activation::kSigmoid>{}); break;
    case Activation::kRelu: body(ActivationTag<Activation::kRelu>{}); break;
    case Activation::kLeakyRelu: body(ActivationTag<Activation::kLeakyRelu>{}); break;
    case Activation::kRelu6: body(ActivationTag<Activation::kRelu6>{}); break;
    case Activation::kSoftplus: body(ActivationTag<Activation::kSoftplus>{}); break;
    case Activation::kGelu: body(ActivationTag<Activation::kGelu>{}); break;
    case Activation::kSign: body(ActivationTag<Activation::kSign>{}); break;
  }
}

// Calls body(ActivationGrad<A, from_output>{}). The caller has checked
// grad_from_output_supported(a, slope) when from_output is set.
template <typename Body>
inline void dispatch_activation_grad(Activation a, bool from_output, Body&& body) {
  dispatch_activation(a, [&](auto tag) {
    constexpr Activation A = decltype(tag)::value;
    if constexpr (kGradFromOutput<A>) {
      if (from_output) return body(ActivationGrad<A, true>{});
    }
    body(ActivationGrad<A, false>{});
  });
}

}  // namespace fastcredit
