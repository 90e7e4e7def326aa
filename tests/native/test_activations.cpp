// Host checks of csrc/fastcredit/activations.h without torch: each derivative agrees with a
// central difference of its own f, the output form f'(from f(x)) agrees with f'(x), and f and
// f' hit the values that pin each formula down.
#include <cmath>
#include <cstdio>

#include "fastcredit/activations.h"

using namespace fastcredit;

static int failures = 0;

static void expect(bool ok, const char* what, double x, double got, double want) {
  if (!ok && ++failures <= 20)
    std::fprintf(stderr, "FAIL %s at x = %.17g: got %.17g want %.17g\n", what, x, got, want);
}

template <Activation A>
static void check_derivative_matches_difference(const char* name, double slope) {
  // Away from kinks (0 and 6) so the central difference is smooth there.
  for (double x = -7.95; x < 25; x += 0.1) {
    if (std::fabs(x) < 1e-3 || std::fabs(x - 6) < 1e-3 || std::fabs(x - 20) < 1e-3) continue;
    const double h = 1e-6;
    const double numeric =
        (activation_value<A>(x + h, slope) - activation_value<A>(x - h, slope)) / (2 * h);
    const double analytic = activation_grad<A>(x, slope);
    expect(std::fabs(numeric - analytic) < 1e-7, name, x, analytic, numeric);
    // float instantiation: same formula in single precision
    const float single = activation_grad<A>(static_cast<float>(x), static_cast<float>(slope));
    expect(std::fabs(single - analytic) < 1e-5, name, x, single, analytic);
    if constexpr (kGradFromOutput<A>) {
      const double from_output = activation_grad_from_output<A>(activation_value<A>(x, slope),
                                                                 slope);
      expect(std::fabs(from_output - analytic) < 1e-12, name, x, from_output, analytic);
    }
  }
}

int main() {
  check_derivative_matches_difference<Activation::kIdentity>("identity", 0);
  check_derivative_matches_difference<Activation::kTanh>("tanh", 0);
  check_derivative_matches_difference<Activation::kSigmoid>("sigmoid", 0);
  check_derivative_matches_difference<Activation::kRelu>("relu", 0);
  check_derivative_matches_difference<Activation::kLeakyRelu>("leaky_relu", 0.3);
  check_derivative_matches_difference<Activation::kRelu6>("relu6", 0);
  check_derivative_matches_difference<Activation::kSoftplus>("softplus", 0);
  check_derivative_matches_difference<Activation::kGelu>("gelu", 0);

  // Values that pin the formulas: gelu(1) = Phi(1), softplus(0) = log 2 and its threshold,
  // relu6's cap, and the kinks where torch's derivative is 0 (relu, relu6) or the slope.
  const double phi1 = 0.84134474606854293;
  expect(std::fabs(activation_value<Activation::kGelu>(1.0, 0.0) - phi1) < 1e-15, "gelu(1)", 1,
         activation_value<Activation::kGelu>(1.0, 0.0), phi1);
  expect(activation_value<Activation::kSoftplus>(0.0, 0.0) == std::log(2.0), "softplus(0)", 0,
         activation_value<Activation::kSoftplus>(0.0, 0.0), std::log(2.0));
  expect(activation_value<Activation::kSoftplus>(21.0, 0.0) == 21.0, "softplus(21)", 21,
         activation_value<Activation::kSoftplus>(21.0, 0.0), 21);
  expect(activation_grad<Activation::kSoftplus>(21.0, 0.0) == 1.0, "softplus'(21)", 21,
         activation_grad<Activation::kSoftplus>(21.0, 0.0), 1);
  expect(activation_value<Activation::kRelu6>(9.0, 0.0) == 6.0, "relu6(9)", 9,
         activation_value<Activation::kRelu6>(9.0, 0.0), 6);
  expect(activation_grad<Activation::kRelu>(0.0, 0.0) == 0.0, "relu'(0)", 0,
         activation_grad<Activation::kRelu>(0.0, 0.0), 0);
  expect(activation_grad<Activation::kRelu6>(0.0, 0.0) == 0.0, "relu6'(0)", 0,
         activation_grad<Activation::kRelu6>(0.0, 0.0), 0);
  expect(activation_grad<Activation::kRelu6>(6.0, 0.0) == 0.0, "relu6'(6)", 6,
         activation_grad<Activation::kRelu6>(6.0, 0.0), 0);
  expect(activation_grad<Activation::kLeakyRelu>(0.0, 0.3) == 0.3, "leaky_relu'(0)", 0,
         activation_grad<Activation::kLeakyRelu>(0.0, 0.3), 0.3);
  // The output form at the kinks, where f(x) is 0 or 6.
  expect(activation_grad_from_output<Activation::kRelu>(0.0, 0.0) == 0.0, "relu'(y=0)", 0,
         activation_grad_from_output<Activation::kRelu>(0.0, 0.0), 0);
  expect(activation_grad_from_output<Activation::kRelu6>(6.0, 0.0) == 0.0, "relu6'(y=6)", 6,
         activation_grad_from_output<Activation::kRelu6>(6.0, 0.0), 0);
  expect(activation_grad_from_output<Activation::kLeakyRelu>(0.0, 0.3) == 0.3,
         "leaky_relu'(y=0)", 0, activation_grad_from_output<Activation::kLeakyRelu>(0.0, 0.3),
         0.3);
  expect(grad_from_output_supported(Activation::kLeakyRelu, 0.0) &&
             !grad_from_output_supported(Activation::kLeakyRelu, -0.1) &&
             !grad_from_output_supported(Activation::kGelu, 0.0) &&
             !grad_from_output_supported(Activation::kSoftplus, 0.0),
         "grad_from_output_supported", 0, 0, 1);

  if (failures) {
    std::fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  std::printf("activation tests: all passed\n");
  return 0;
}
