// Driver for the emulation self-tests: builds inputs, runs a kernel through its launcher, and
// checks the result against a plain C++ reference.
//   driver matmul|reduce float|double [reps]   exit 0: right; 1: "MISMATCH"; 2: launch error
//   driver warp                                the warp/block intrinsics against their spec
//   driver launch                              GPU-like launch validation
//   driver misuse CASE                         a misuse the header must abort on
//   driver bench                               time a 64x64x64 matmul (4x4 blocks of 256)
#include "cuda_emu.h"
// clang-format off: the emulation header must come first
#include "fastcredit/macros.h"
#include "kernels.cuh"
// clang-format on

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

int failures = 0;
void check(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  failures += !ok;
}

template <typename T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  cudaMalloc(&d, h.size() * sizeof(T));
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}
template <typename T>
std::vector<T> to_host(const T* d, std::size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}
int launch_failed(cudaError_t e) {
  std::printf("CUDA error: %s (%s): %s\n", cudaGetErrorString(e), cudaGetErrorName(e),
              fc_emu::last_error_detail.c_str());
  return 2;
}

// Small integers: every product and sum is exact, so results compare bit for bit.
template <typename T>
int run_matmul(int reps) {
  const int m = 33, n = 17, k = 40;
  std::vector<T> a(m * k), b(k * n), want(m * n, T(0));
  for (int i = 0; i < m * k; ++i) a[i] = T((i * 7) % 11 - 5);
  for (int i = 0; i < k * n; ++i) b[i] = T((i * 5) % 13 - 6);
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < n; ++c)
      for (int j = 0; j < k; ++j) want[r * n + c] += a[r * k + j] * b[j * n + c];
  T *da = to_device(a), *db = to_device(b), *dc = nullptr;
  cudaMalloc(&dc, m * n * sizeof(T));
  int bad_runs = 0;
  for (int rep = 0; rep < reps; ++rep) {
    if (cudaError_t e = selftest::launch_matmul(da, db, dc, m, n, k, nullptr))
      return launch_failed(e);
    const std::vector<T> got = to_host(dc, m * n);
    int wrong = 0, first = -1;
    for (int i = 0; i < m * n; ++i)
      if (!(got[i] == want[i]) && wrong++ == 0) first = i;
    if (wrong) {
      ++bad_runs;
      std::printf("MISMATCH matmul run %d: %d of %d entries wrong, first c[%d][%d] = %g, want %g\n",
                  rep, wrong, m * n, first / n, first % n, double(got[first]), double(want[first]));
    }
  }
  cudaFree(da), cudaFree(db), cudaFree(dc);
  if (bad_runs) return 1;
  std::printf("OK matmul %dx%dx%d, %d run(s)\n", m, n, k, reps);
  return 0;
}

template <typename T>
int run_reduce(int reps) {
  const int n = 200, blocks = 2, threads = 128;  // 256 threads: the grid-stride loop is short
  std::vector<T> x(n);
  T want = 0;
  for (int i = 0; i < n; ++i) want += x[i] = T(i % 7 - 3) + T(0.25);
  T* dx = to_device(x);
  T* dout = nullptr;
  cudaMalloc(&dout, sizeof(T));
  int bad_runs = 0;
  for (int rep = 0; rep < reps; ++rep) {
    cudaMemset(dout, 0, sizeof(T));
    if (cudaError_t e = selftest::launch_block_sum(dx, n, dout, blocks, threads, nullptr))
      return launch_failed(e);
    const T got = to_host(dout, 1)[0];
    if (!(got == want)) {
      ++bad_runs;
      std::printf("MISMATCH reduce run %d: got %g, want %g\n", rep, double(got), double(want));
    }
  }
  cudaFree(dx), cudaFree(dout);
  if (bad_runs) return 1;
  std::printf("OK reduce n=%d, %d run(s)\n", n, reps);
  return 0;
}

// One record per thread of a 2-warp block (the second warp is what width/segment rules see).
struct WarpOut {
  int shfl, shfl_w8, up, down_w16, xor1, xor_w4_16;
  unsigned ballot, match;
  int any, all, counts, ors, ands;
  unsigned active, active_div;
  double dshfl;
};

__global__ void warp_kernel(WarpOut* out, int* counter, double* dsum) {
  const int t = threadIdx.x, lane = t % 32;
  WarpOut r;
  r.shfl = __shfl_sync(0xffffffffu, t * 10, 3);          // lane 3 of this warp
  r.shfl_w8 = __shfl_sync(0xffffffffu, t, 9, 8);         // srcLane 9 % 8 = 1 of segment
  r.up = __shfl_up_sync(0xffffffffu, t, 2);              // own value on lanes 0, 1
  r.down_w16 = __shfl_down_sync(0xffffffffu, t, 4, 16);  // own value past the segment
  r.xor1 = __shfl_xor_sync(0xffffffffu, t, 1);
  r.xor_w4_16 = __shfl_xor_sync(0xffffffffu, t, 16, 4);  // later segment: own value
  r.ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  r.match = __match_any_sync(0xffffffffu, lane / 8);
  r.any = __any_sync(0xffffffffu, lane == 31);
  r.all = __all_sync(0xffffffffu, lane < 31);
  r.dshfl = __shfl_sync(0xffffffffu, 0.5 + t, 31);
  if (lane < 16)
    __syncwarp(0x0000ffffu);  // a partial-mask group on its own
  else
    __syncwarp(0xffff0000u);
  r.counts = __syncthreads_count(t % 2);
  r.ors = __syncthreads_or(t == 63);
  r.ands = __syncthreads_and(t < 63);
  r.active = __activemask();
  if (lane < 10)
    r.active_div = __activemask();  // two branches: two active sets
  else
    r.active_div = __activemask();
  out[t] = r;
  atomicAdd(counter, 1);
  atomicMax(counter + 1, t);
  atomicAdd(dsum, 0.5);
}

int run_warp() {
  WarpOut* d = nullptr;
  int* counter = nullptr;
  double* dsum = nullptr;
  cudaMalloc(&d, 64 * sizeof(WarpOut));
  cudaMalloc(&counter, 2 * sizeof(int));
  cudaMalloc(&dsum, sizeof(double));
  cudaMemset(counter, 0, 2 * sizeof(int));
  cudaMemset(dsum, 0, sizeof(double));
  FC_LAUNCH(1, 64, 0, nullptr, warp_kernel)(d, counter, dsum);
  check(cudaGetLastError() == cudaSuccess, "warp kernel launched");
  const std::vector<WarpOut> r = to_host(d, 64);
  bool shfl = true, votes = true, block = true;
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32, base = t - lane;
    shfl &= r[t].shfl == (base + 3) * 10 && r[t].shfl_w8 == (t & ~7) + 1;
    shfl &= r[t].up == (lane < 2 ? t : t - 2);
    shfl &= r[t].down_w16 == (lane % 16 + 4 < 16 ? t + 4 : t);
    shfl &= r[t].xor1 == (t ^ 1) && r[t].xor_w4_16 == (lane < 16 ? t : t ^ 16) &&
            r[t].dshfl == 0.5 + base + 31;
    votes &= r[t].ballot == 0x49249249u && r[t].match == 0xffu << (lane / 8 * 8);
    votes &= r[t].any == 1 && r[t].all == 0;
    block &= r[t].counts == 32 && r[t].ors == 1 && r[t].ands == 0 && r[t].active == 0xffffffffu;
    block &= r[t].active_div == (lane < 10 ? 0x3ffu : ~0x3ffu);
  }
  check(shfl, "shuffles: srcLane, width segments, up/down/xor edges, 8-byte values");
  check(votes, "ballot, match_any, any, all");
  check(block, "__syncthreads_count/or/and, __activemask (converged and diverged)");
  const std::vector<int> c = to_host(counter, 2);
  check(c[0] == 64 && c[1] == 63 && to_host(dsum, 1)[0] == 32.0, "atomicAdd int/double, atomicMax");
  check(__popc(0xf0f0u) == 8 && __clz(1) == 31 && __clz(0) == 32 && __ffs(8) == 4 &&
            __ffs(0) == 0 && __clzll(1) == 63 && __popcll(~0ull) == 64,
        "bit intrinsics");
  check(__umulhi(0xffffffffu, 0xffffffffu) == 0xfffffffeu && __umul64hi(~0ull, 2ull) == 1ull &&
            __longlong_as_double(__double_as_longlong(1.5)) == 1.5 &&
            __uint_as_float(__float_as_uint(-2.0f)) == -2.0f && min(3, 2u) == 2u &&
            max(1.0f, 2.0) == 2.0,
        "mul-hi, bit casts, min/max");
  cudaFree(d), cudaFree(counter), cudaFree(dsum);
  return failures ? 1 : 0;
}

// Launches store_kernel and reports the error and whether it ran.
cudaError_t try_launch(dim3 grid, dim3 block, std::size_t smem, bool* ran) {
  static int* out = nullptr;
  if (!out) cudaMalloc(&out, sizeof(int));
  cudaMemset(out, 0, sizeof(int));
  FC_LAUNCH(grid, block, smem, nullptr, selftest::store_kernel)(out, 7, int(smem / sizeof(int)));
  const cudaError_t e = cudaGetLastError();
  *ran = to_host(out, 1)[0] == 7;
  return e;
}

int run_launch() {
  bool ran = false;
  using selftest::store_kernel;
  check(try_launch(2, dim3(32, 32), 0, &ran) == cudaSuccess && ran, "1024 threads run");
  check(try_launch(1, 1025, 0, &ran) == cudaErrorInvalidConfiguration && !ran,
        "1025 threads: invalid configuration, not run");
  check(try_launch(1, dim3(1, 1, 65), 0, &ran) == cudaErrorInvalidConfiguration && !ran,
        "block z = 65 refused");
  check(try_launch(dim3(1, 65536), 1, 0, &ran) == cudaErrorInvalidConfiguration && !ran,
        "grid y = 65536 refused");
  check(try_launch(0, 32, 0, &ran) == cudaErrorInvalidConfiguration && !ran, "empty grid refused");
  check(try_launch(1, dim3(32, 0), 0, &ran) == cudaErrorInvalidConfiguration && !ran,
        "empty block refused");
  check(try_launch(1, 32, 48 * 1024, &ran) == cudaSuccess && ran, "48 KiB dynamic smem runs");
  check(try_launch(1, 32, 48 * 1024 + 4, &ran) == cudaErrorInvalidValue && !ran,
        "48 KiB + 4 without the attribute refused");
  check(cudaFuncSetAttribute(store_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             100 * 1024) == cudaSuccess &&
            try_launch(1, 32, 100 * 1024, &ran) == cudaSuccess && ran,
        "100 KiB runs after cudaFuncSetAttribute");
  check(cudaFuncSetAttribute(store_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             227 * 1024 + 4) == cudaErrorInvalidValue &&
            try_launch(1, 32, 227 * 1024 + 4, &ran) == cudaErrorInvalidValue && !ran,
        "more than 227 KiB refused");
  try_launch(1, 1025, 0, &ran);  // try_launch consumed the error; make a fresh one
  FC_LAUNCH(1, 1025, 0, nullptr, store_kernel)(nullptr, 0, 0);
  check(cudaPeekAtLastError() == cudaErrorInvalidConfiguration &&
            cudaGetLastError() == cudaErrorInvalidConfiguration &&
            cudaGetLastError() == cudaSuccess,
        "cudaPeekAtLastError keeps the error, cudaGetLastError clears it");
  check(cudaFree(reinterpret_cast<void*>(&ran)) == cudaErrorInvalidValue,
        "cudaFree of a host pointer");
  cudaGetLastError();
  return failures ? 1 : 0;
}

// Each case breaks one rule of warp collectives; the header must abort with a message.
__global__ void misuse_kernel(int which, int* out) {
  const int lane = threadIdx.x % 32;
  int v = lane;
  switch (which) {
    case 0:  // blockDim 48: warp 1 has 16 lanes, the full mask names 16 absent ones
      __syncwarp();
      break;
    case 1:  // the calling lane is not in its own mask
      v = __shfl_sync(0xfffffffeu, v, 1);
      break;
    case 2:  // lanes 0..2 name each other with different masks
      if (lane < 3) __syncwarp(lane == 0 ? 0x3u : 0x7u);
      break;
    case 3:  // lanes 0 and 1 wait for each other at two different collectives
      if (lane == 0) __syncwarp(0x3u);
      if (lane == 1) v = __ballot_sync(0x3u, 1);
      break;
    case 4:  // lanes 0 and 1 read lane 5, which is not taking part
      if (lane < 2) v = __shfl_sync(0x3u, v, 5);
      break;
    case 5:  // a cycle of three: 0 waits for 1, 1 for 2, 2 for 0 (blockDim 3)
      if (lane == 0) __syncwarp(0x3u);
      if (lane == 1) __syncwarp(0x6u);
      if (lane == 2) __syncwarp(0x5u);
      break;
  }
  out[threadIdx.x] = v;
}

int run_misuse(const std::string& which) {
  static const char* const cases[] = {"absent",  "notinmask", "masks",
                                      "crossed", "readout",   "cycle"};
  static int out[64];
  if (which == "outside") __syncthreads();  // host code is not a kernel
  for (int i = 0; i < 6; ++i)
    if (which == cases[i]) {
      FC_LAUNCH(1, i == 0 ? 48 : i == 5 ? 3 : 32, 0, nullptr, misuse_kernel)(i, out);
      std::printf("misuse %s was not caught\n", cases[i]);
      return 1;
    }
  std::fprintf(stderr, "unknown misuse case %s\n", which.c_str());
  return 64;
}

int run_bench() {
  const int s = 64, reps = 5;
  std::vector<float> a(s * s, 1.0f), b(s * s, 2.0f);
  float *da = to_device(a), *db = to_device(b), *dc = nullptr;
  cudaMalloc(&dc, s * s * sizeof(float));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) selftest::launch_matmul(da, db, dc, s, s, s, nullptr);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const bool ok = to_host(dc, s * s)[s * s - 1] == 2.0f * s;
  std::printf("%s matmul 64x64x64 (16 blocks x 256 threads): %.2f ms per launch\n",
              ok ? "OK" : "MISMATCH", ms / reps);
  cudaFree(da), cudaFree(db), cudaFree(dc);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const bool dbl = argc > 2 && std::strcmp(argv[2], "double") == 0;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 1;
  if (mode == "matmul") return dbl ? run_matmul<double>(reps) : run_matmul<float>(reps);
  if (mode == "reduce") return dbl ? run_reduce<double>(reps) : run_reduce<float>(reps);
  if (mode == "warp") return run_warp();
  if (mode == "launch") return run_launch();
  if (mode == "bench") return run_bench();
  if (mode == "misuse" && argc > 2) return run_misuse(argv[2]);
  std::fprintf(stderr,
               "usage: %s matmul|reduce [float|double [reps]] | warp | launch | bench"
               " | misuse CASE\n",
               argv[0]);
  return 64;
}
