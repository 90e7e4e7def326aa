// Runs every CUDA kernel of csrc/cuda through the emulation header, on buffers from the
// emulated cudaMalloc (exact size, NaN-poisoned), against a host computation of the same
// formula. Built by tests/test_cuda_kernels_native.py in fiber mode, under ASan+UBSan, and in
// thread mode under TSan. Small odd shapes: the emulator is ~1000x slower than native code.
#include "cuda_emu.h"
// the kernels come after the emulation header
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "cuda/lra.cuh"
#include "cuda/dfa_epilogue.cuh"
#include "cuda/projection.cuh"
#include "cuda/sign_feedback.cuh"

using namespace fastcredit;

static int failures = 0;

static double feedback_entry(uint64_t seed, int64_t r, int64_t c, Dist dist, double scale) {
  double values[4];
  feedback_group(seed, r, c / 4, dist, scale, values);
  return values[c % 4];
}

template <typename T>
static T* device_copy(const std::vector<T>& host) {
  T* ptr = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&ptr), host.size() * sizeof(T));
  cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return ptr;
}

template <typename T>
static std::vector<T> host_copy(const T* ptr, size_t count) {
  std::vector<T> host(count);
  cudaMemcpy(host.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost);
  return host;
}

static void expect_close(double got, double want, double tol, const char* what, long a, long b) {
  if (!(std::fabs(got - want) <= tol * (1 + std::fabs(want)))) {
    if (++failures <= 10)
      std::fprintf(stderr, "FAIL %s at (%ld, %ld): got %.17g want %.17g\n", what, a, b, got, want);
  }
}

template <typename T>
static void check_feedback_fill(int64_t rows, int64_t cols, Dist dist) {
  // Column-major output (strides 1, rows) to exercise the strided store.
  T* out = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&out), rows * cols * sizeof(T));
  if (cuda::launch_feedback_fill(out, rows, cols, 1, rows, 77, dist, 0.5, nullptr) != cudaSuccess)
    ++failures;
  const std::vector<T> got = host_copy(out, rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const T want = static_cast<T>(feedback_entry(77, r, c, dist, 0.5));
      if (got[r + c * rows] != want) {  // same code path on host and "device": bit-exact
        if (++failures <= 10) std::fprintf(stderr, "FAIL feedback_fill at (%ld, %ld)\n", long(r), long(c));
      }
    }
  cudaFree(out);
}

template <typename T>
static void check_seeded_project(int64_t n, int64_t k, int64_t cols, bool transpose, Dist dist,
                                 unsigned max_grid_y = cuda::kMaxGridY) {
  // x is the transpose of a [k, n] buffer: strides (1, n), as for a non-contiguous input.
  std::vector<T> x_host(n * k);
  for (size_t i = 0; i < x_host.size(); ++i) x_host[i] = static_cast<T>(std::sin(0.7 * i + 0.1));
  T* x = device_copy(x_host);
  T* out = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&out), n * cols * sizeof(T));
  if (cuda::launch_seeded_project(x, n, k, 1, n, out, cols, 5, dist, 1.5, transpose, nullptr,
                                  max_grid_y) != cudaSuccess)
    ++failures;
  const std::vector<T> got = host_copy(out, n * cols);
  const double tol = sizeof(T) == 8 ? 1e-12 : 1e-5;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double want = 0;
      for (int64_t d = 0; d < k; ++d) {
        const double f = transpose ? feedback_entry(5, c, d, dist, 1.5)
                                   : feedback_entry(5, d, c, dist, 1.5);
        want += static_cast<double>(x_host[r + d * n]) * static_cast<double>(static_cast<T>(f));
      }
      expect_close(got[r * cols + c], want, tol * std::sqrt(double(k)), "seeded_project", r, c);
    }
  cudaFree(x);
  cudaFree(out);
}

template <typename T>
static void check_lra_error(Activation activation, LocalError error, bool use_fprime,
                            Surrogate surrogate) {
  const int64_t count = 1000;  // more than one block of 256 threads, not a multiple of it
  std::vector<T> a_host(count), d_host(count);
  for (int64_t i = 0; i < count; ++i) {
    a_host[i] = static_cast<T>(3 * std::sin(0.37 * i));
    d_host[i] = static_cast<T>(std::cos(0.11 * i));
  }
  T* a = device_copy(a_host);
  T* d = device_copy(d_host);
  T* out = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&out), count * sizeof(T));
  if (cuda::launch_lra_error(a, d, out, count, 0.3, activation, error, use_fprime, 0.05,
                             surrogate, nullptr) != cudaSuccess)
    ++failures;
  const std::vector<T> got = host_copy(out, count);
  dispatch_activation(activation, [&](auto act) {
    dispatch_local_error(error, [&](auto err) {
      for (int64_t i = 0; i < count; ++i) {
        const T want = lra_error_unit<decltype(act)::value, decltype(err)::value, T>(
            a_host[i], d_host[i], T(0.3), T(0.05), use_fprime, surrogate);
        expect_close(got[i], want, 0, "lra_error", int(activation), long(i));
      }
    });
  });
  cudaFree(a);
  cudaFree(d);
  cudaFree(out);
}

// Host formula of sign_feedback, written out independently of fastcredit/sign_feedback.h.
static double host_sign_feedback(double w, double m) {
  if (std::isnan(w)) return w;
  return (w > 0) ? m : (w < 0 ? -m : 0.0 * m);
}

template <typename T>
static void check_sign_feedback(int64_t rows, int64_t cols, Magnitude kind, Dist dist) {
  std::vector<T> w_host(rows * cols), m_host(rows * cols);
  for (size_t i = 0; i < w_host.size(); ++i) {
    w_host[i] = i % 5 == 2 ? T(0) : static_cast<T>(std::sin(1.3 * i + 0.2));
    m_host[i] = static_cast<T>(std::cos(0.9 * i));
  }
  if (!w_host.empty()) w_host.back() = std::numeric_limits<T>::quiet_NaN();
  T* w = device_copy(w_host);
  T* m = kind == Magnitude::kStored ? device_copy(m_host) : nullptr;
  T* out = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&out), rows * cols * sizeof(T));
  const uint64_t seed = step_seed(11, 3);
  if (cuda::launch_sign_feedback(w, m, out, rows, cols, kind, seed, dist, 0.75, nullptr) !=
      cudaSuccess)
    ++failures;
  const std::vector<T> got = host_copy(out, rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      double mag = 0.75;
      if (kind == Magnitude::kStored) mag = static_cast<T>(std::fabs(double(m_host[i])) * T(0.75));
      if (kind == Magnitude::kSeeded) mag = static_cast<T>(std::fabs(feedback_entry(seed, r, c, dist, 0.75)));
      const double want = static_cast<T>(host_sign_feedback(w_host[i], static_cast<T>(mag)));
      const bool both_nan = std::isnan(double(got[i])) && std::isnan(want);
      if (!both_nan && double(got[i]) != want) {  // same formula on host and "device": exact
        if (++failures <= 10)
          std::fprintf(stderr, "FAIL sign_feedback at (%ld, %ld): got %.17g want %.17g\n",
                       long(r), long(c), double(got[i]), want);
      }
    }
  cudaFree(w);
  if (m) cudaFree(m);
  cudaFree(out);
}

template <typename T>
static void check_dfa_backward_epilogue(int64_t n, int64_t d, Activation act, bool from_output,
                                        unsigned max_grid_y = cuda::kMaxGridY) {
  // grad is the transpose of a [d, n] buffer (strides 1, n); saved is row-major and holds the
  // pre-activation x, or f(x) when from_output.
  std::vector<T> grad_host(n * d), x_host(n * d), saved_host(n * d);
  for (size_t i = 0; i < grad_host.size(); ++i) {
    grad_host[i] = static_cast<T>(std::sin(0.37 * i + 0.2));
    x_host[i] = static_cast<T>(5.0 * std::cos(0.11 * i) + 1.0);
    saved_host[i] = x_host[i];
    if (from_output)
      dispatch_activation(act, [&](auto tag) {
        saved_host[i] = activation_value<decltype(tag)::value>(x_host[i], T(0.2));
      });
  }
  T* grad = device_copy(grad_host);
  T* saved = device_copy(saved_host);
  T *delta = nullptr, *bias = nullptr, *workspace = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&delta), std::max<int64_t>(n * d, 1) * sizeof(T));
  cudaMalloc(reinterpret_cast<void**>(&bias), std::max<int64_t>(d, 1) * sizeof(T));
  const int64_t ws = cuda::dfa_epilogue_workspace_size(n, d);
  if (ws) cudaMalloc(reinterpret_cast<void**>(&workspace), ws * sizeof(T));
  if (cuda::launch_dfa_backward_epilogue(grad, 1, n, saved, d, 1, n, d, act, 0.2, from_output,
                                         delta, bias, workspace, nullptr, max_grid_y) !=
      cudaSuccess)
    ++failures;
  const std::vector<T> got_delta = host_copy(delta, n * d);
  const std::vector<T> got_bias = host_copy(bias, d);
  const double tol = sizeof(T) == 8 ? 1e-12 : 1e-5;
  for (int64_t c = 0; c < d; ++c) {
    double sum = 0;
    for (int64_t r = 0; r < n; ++r) {
      double f_prime = 0;  // from x: both forms must agree with it
      dispatch_activation(act, [&](auto tag) {
        f_prime = activation_grad<decltype(tag)::value>(static_cast<double>(x_host[r * d + c]),
                                                        0.2);
      });
      const double want = static_cast<double>(grad_host[r + c * n]) * f_prime;
      expect_close(got_delta[r * d + c], want, tol, "dfa_backward_epilogue delta", r, c);
      sum += want;
    }
    expect_close(got_bias[c], sum, tol * std::sqrt(double(n + 1)), "dfa_backward_epilogue bias",
                 c, n);
  }
  cudaFree(grad);
  cudaFree(saved);
  cudaFree(delta);
  cudaFree(bias);
  if (workspace) cudaFree(workspace);
}

int main() {
  for (Dist dist : {Dist::kUniform, Dist::kNormal, Dist::kRademacher}) {
    check_feedback_fill<float>(5, 7, dist);
    check_feedback_fill<double>(3, 1, dist);
  }
  // (n, k, cols) with partial tiles in every dimension and more than one block in each.
  check_seeded_project<double>(67, 17, 65, false, Dist::kNormal);
  check_seeded_project<double>(3, 33, 70, true, Dist::kUniform);
  check_seeded_project<float>(65, 1, 3, false, Dist::kRademacher);
  check_seeded_project<float>(1, 20, 129, true, Dist::kNormal);
  // grid.y (column tiles) capped below the tile count: blocks loop over column tiles
  check_seeded_project<double>(3, 17, 200, false, Dist::kNormal, 2);
  check_lra_error<double>(Activation::kTanh, LocalError::kGaussian, false, Surrogate::kNone);
  check_lra_error<float>(Activation::kSign, LocalError::kCauchy, true, Surrogate::kNone);
  check_lra_error<float>(Activation::kSign, LocalError::kGaussian, false, Surrogate::kHardtanh);
  check_lra_error<double>(Activation::kSoftplus, LocalError::kCauchy, true, Surrogate::kNone);
  // more groups than one block's threads, a partial last group, every magnitude source
  for (Magnitude kind : {Magnitude::kScalar, Magnitude::kStored, Magnitude::kSeeded}) {
    check_sign_feedback<float>(33, 37, kind, Dist::kUniform);
    check_sign_feedback<double>(5, 3, kind, Dist::kNormal);
  }
  check_sign_feedback<double>(2, 9, Magnitude::kSeeded, Dist::kRademacher);
  for (Activation act : {Activation::kIdentity, Activation::kTanh, Activation::kSigmoid,
                         Activation::kRelu, Activation::kLeakyRelu, Activation::kRelu6,
                         Activation::kSoftplus, Activation::kGelu}) {
    check_dfa_backward_epilogue<double>(20, 5, act, false);
    if (grad_from_output_supported(act, 0.2)) check_dfa_backward_epilogue<double>(20, 5, act, true);
  }
  // Three row slabs (workspace + column-sum kernel), two column blocks, and the empty cases.
  check_dfa_backward_epilogue<double>(260, 37, Activation::kGelu, false);
  check_dfa_backward_epilogue<float>(131, 33, Activation::kTanh, true);
  // grid.y (slabs) capped below the slab count: blocks loop over slabs
  check_dfa_backward_epilogue<double>(600, 10, Activation::kRelu, false, 2);
  check_dfa_backward_epilogue<float>(0, 3, Activation::kTanh, false);
  check_dfa_backward_epilogue<float>(4, 0, Activation::kTanh, false);
  if (cudaGetLastError() != cudaSuccess) ++failures;
  if (failures) {
    std::fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  std::printf("emulated CUDA kernel tests: all passed\n");
  return 0;
}
