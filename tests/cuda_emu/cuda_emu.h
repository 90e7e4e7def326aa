// CUDA emulation for tests (never shipped): plain CUDA C++ kernel sources compile with a host
// C++17 compiler and run on the CPU, with checks for what a GPU silently tolerates.
//
// Include order: (torch headers,) this header, csrc/fastcredit/macros.h, then the kernels.
// Build: g++ -std=c++17 -pthread -Wno-unknown-pragmas [-DFC_EMU_FIBERS]  (see README.md here)
//
// Execution model
//  * A launch runs its blocks one after another. Within a block each CUDA thread is a real
//    std::thread (default: ThreadSanitizer sees the data races), or with -DFC_EMU_FIBERS a
//    ucontext fiber on the launching thread (fast and deterministic, invisible to TSan).
//  * Only one block is alive at a time, so `__shared__` can mean `static`: the block's threads
//    share the variable and no other block touches it meanwhile. Consequences: static shared
//    memory is neither poisoned nor reset between blocks, and launches are serialised.
//  * Every synchronisation point goes through Block::collective, the one implementation of
//    the semantics; the two Scheduler classes differ only in how a thread waits.
//  * Warp collectives have exact-mask semantics and, as on sm_6x, every lane named in a mask
//    must reach the same call site. Naming an exited or absent lane is an error here (sm_70+
//    would not hang, but what it reads from such a lane is undefined).
#pragma once

#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#error "cuda_emu.h emulates CUDA for host compilers; never include it in nvcc builds"
#endif
#if defined(__CUDA_RUNTIME_H__) || defined(__CUDA_RUNTIME_API_H__) || defined(__DRIVER_TYPES_H__)
#error "cuda_emu.h replaces the CUDA runtime API; do not mix it with cuda_runtime*.h"
#endif
#if defined(__SANITIZE_THREAD__)
#define FC_EMU_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FC_EMU_ASAN 1
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FC_EMU_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#define FC_EMU_ASAN 1
#endif
#endif
#if defined(FC_EMU_FIBERS) && defined(FC_EMU_TSAN)
#error "FC_EMU_FIBERS hides every CUDA thread from ThreadSanitizer: build TSan tests in thread mode"
#endif

#define FC_CUDA_EMULATION 1

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>
#if defined(FC_EMU_FIBERS)
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#if defined(FC_EMU_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
#endif
#if defined(FC_EMU_TSAN)
extern "C" {  // libtsan: hide our own lock, then state CUDA's ordering explicitly
void AnnotateIgnoreSyncBegin(const char*, int);
void AnnotateIgnoreSyncEnd(const char*, int);
void AnnotateIgnoreReadsBegin(const char*, int);
void AnnotateIgnoreReadsEnd(const char*, int);
void AnnotateIgnoreWritesBegin(const char*, int);
void AnnotateIgnoreWritesEnd(const char*, int);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#endif

// ---------------------------------------------------------------------------------------------
// Qualifiers, vector types and built-in variables. Self-contained: CUDA's own headers (even
// vector_types.h, cuda_fp16.h) pull in its runtime API, which this header replaces.
#define FC_EMU_VECTORS(T, N, A2, A4)                           \
  struct alignas(A2) N##2 { T x, y; };                         \
  struct N##3 { T x, y, z; };                                  \
  struct alignas(A4) N##4 { T x, y, z, w; };                   \
  inline N##2 make_##N##2(T x, T y) { return {x, y}; }         \
  inline N##3 make_##N##3(T x, T y, T z) { return {x, y, z}; } \
  inline N##4 make_##N##4(T x, T y, T z, T w) { return {x, y, z, w}; }
FC_EMU_VECTORS(int, int, 8, 16)
FC_EMU_VECTORS(unsigned int, uint, 8, 16)
FC_EMU_VECTORS(float, float, 8, 16)
FC_EMU_VECTORS(double, double, 16, 16)
FC_EMU_VECTORS(long long, longlong, 16, 16)
FC_EMU_VECTORS(unsigned long long, ulonglong, 16, 16)
#undef FC_EMU_VECTORS
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

#define __host__
#define __device__
#define __global__
#define __shared__ static  // one block at a time: see the top of this file
#define __constant__
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Not defined on purpose: __noinline__ (glibc and libstdc++ use __attribute__((__noinline__))).
// `extern __shared__` cannot compile here: declare dynamic shared memory with FC_DYNAMIC_SHARED.

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
inline constexpr int warpSize = 32;  // a run-time value under nvcc: never use it as a constant

// ---------------------------------------------------------------------------------------------
// Runtime API types (values as in CUDA's driver_types.h)
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidMemcpyDirection = 21,
};
typedef enum cudaError cudaError_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost,
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDeviceToDevice,
  cudaMemcpyDefault,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
typedef struct CUstream_st* cudaStream_t;  // every stream is synchronous here

namespace fc_emu {

// The limits of the GPUs we target (sm_90: up to 227 KiB of opt-in shared memory per block).
constexpr unsigned kMaxThreads = 1024, kMaxBlock[3] = {1024, 1024, 64};
constexpr unsigned kMaxGrid[3] = {2147483647u, 65535, 65535};
constexpr std::size_t kDefaultSmem = 48 * 1024, kMaxSmemOptin = 227 * 1024;

inline std::string vformat(const char* fmt, va_list ap) {
  char buf[2048];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  return buf;
}
__attribute__((format(printf, 1, 2))) inline std::string format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = vformat(fmt, ap);
  va_end(ap);
  return s;
}
[[noreturn]] inline void fail(const std::string& msg) {
  std::fprintf(stderr, "fc_emu: %s\n", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

struct Site {  // where a kernel called a synchronising intrinsic or launched
  const char* file;
  unsigned line;
};
inline bool same_site(const Site& a, const Site& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}
inline std::string str(const Site& s) { return format("%s:%u", s.file, s.line); }

// clang-format off
enum class Op : unsigned char {
  syncthreads, syncthreads_or, syncthreads_and, syncthreads_count,  // block barriers
  syncwarp, shfl, shfl_up, shfl_down, shfl_xor, ballot, any, all, match_any, activemask,
};
// clang-format on
inline const char* name(Op op) {
  static const char* const names[] = {
      "__syncthreads",    "__syncthreads_or", "__syncthreads_and", "__syncthreads_count",
      "__syncwarp",       "__shfl_sync",      "__shfl_up_sync",    "__shfl_down_sync",
      "__shfl_xor_sync",  "__ballot_sync",    "__any_sync",        "__all_sync",
      "__match_any_sync", "__activemask"};
  return names[static_cast<int>(op)];
}
inline bool is_barrier(Op op) { return op <= Op::syncthreads_count; }

struct Lane {  // one CUDA thread's scheduling record, guarded by the scheduler's lock
  enum State : unsigned char { running, waiting, exited } st = running;
  Op op = Op::syncthreads;  // what it waits at, while waiting
  Site site{};
  unsigned mask = 0;
  int arg = 0, width = 32;
  std::uint64_t val = 0, res = 0;
#if defined(FC_EMU_TSAN)
  unsigned seq = 0, bar_seq = 0;  // collectives / barriers entered so far
  unsigned char tok[16];          // TSan release slots, a ring indexed by seq
  unsigned peer_seq[32];          // each member's seq at the collective that released us
#endif
};

#if defined(FC_EMU_TSAN)
struct TsanQuiet {  // while alive, this thread's synchronisation and accesses are invisible
  TsanQuiet() {
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~TsanQuiet() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
  }
};
#endif

class Block;

#if !defined(FC_EMU_FIBERS)
// Thread mode: each CUDA thread is a std::thread; a waiting thread sleeps on its warp's
// condition variable until the barrier or collective that holds it completes.
class Scheduler {
 public:
  struct Lock {
    explicit Lock(std::mutex& m) : lk(m) {}
#if defined(FC_EMU_TSAN)
    TsanQuiet quiet;  // constructed before and destroyed after the lock itself
#endif
    std::unique_lock<std::mutex> lk;
  };
  explicit Scheduler(int warps) : cv_(static_cast<std::size_t>(warps)) {}
  Lock lock() { return Lock(mu_); }
  void wait(Lock& l, const Lane& me, int warp) {
    cv_[warp].wait(l.lk, [&] { return me.st != Lane::waiting; });
  }
  void wake_warp(int warp) { cv_[warp].notify_all(); }
  void wake_all() {
    for (auto& cv : cv_) cv.notify_all();
  }
  void run(Block& b, const std::function<void()>& body);

 private:
  std::mutex mu_;
  std::vector<std::condition_variable> cv_;
};
#else
#ifndef FC_EMU_FIBER_STACK_BYTES
#define FC_EMU_FIBER_STACK_BYTES (256 * 1024)
#endif
// Fiber mode: each CUDA thread is a ucontext fiber run by the launching thread. A fiber that
// has to wait switches straight to the next runnable fiber in thread order (or back to run()
// when the block is done): one swapcontext per hop, which dominates the cost.
class Scheduler {
 public:
  struct Lock {};  // one OS thread runs every fiber: nothing to lock
  explicit Scheduler(int) {}
  Lock lock() { return {}; }
  void wait(Lock&, const Lane& me, int) {
    while (me.st == Lane::waiting) hop(false);
  }
  void wake_warp(int) {}
  void wake_all() {}
  void run(Block& b, const std::function<void()>& body);

 private:
  struct Fiber {
    ucontext_t uc;
    void* fake_stack = nullptr;  // ASan's bookkeeping while the fiber is switched out
    const void* stack = nullptr;
    std::size_t stack_size = 0;
  };
  static void entry();
  void hop(bool exiting);          // from fibers_[current_] to the next runnable fiber, or to main_
  void landed(void* fake_stack) {  // first thing after a switch arrives (ASan bookkeeping)
#if defined(FC_EMU_ASAN)
    const void* bottom;
    std::size_t size;
    __sanitizer_finish_switch_fiber(fake_stack, &bottom, &size);
    if (from_main_) main_.stack = bottom, main_.stack_size = size;
#else
    (void)fake_stack;
#endif
  }

  Block* block_ = nullptr;
  const std::function<void()>* body_ = nullptr;
  std::vector<Fiber> fibers_;
  Fiber main_;  // the launching thread; its stack as ASan reports it
  int current_ = -1;
  bool from_main_ = false;  // whether the switch in flight comes from main_
};
#endif

// The block being executed: the semantics of every synchronising intrinsic.
class Block {
 public:
  Block(dim3 grid, dim3 bdim, uint3 bidx, void* smem, Site launch)
      : grid_(grid),
        bdim_(bdim),
        bidx_(bidx),
        smem_(smem),
        launch_(launch),
        n(static_cast<int>(bdim.x * bdim.y * bdim.z)),
        t(static_cast<std::size_t>(n)),
        live(n),
        running(n),
        sched((n + 31) / 32) {}

  void enter(int tid);  // makes the calling OS thread (or fiber) CUDA thread `tid`
  std::uint64_t collective(int me, Op op, Site s, unsigned mask, std::uint64_t val, int arg,
                           int width);
  void exit_thread(int me);

  const dim3 grid_, bdim_;
  const uint3 bidx_;
  void* const smem_;
  const Site launch_;
  const int n;          // threads in the block
  std::vector<Lane> t;  // by linear thread id; warp w is 32w .. 32w+31
  int live, running;    // not exited; not exited and not waiting
  Scheduler sched;

 private:
  void arrive_barrier(int me);
  void arrive_warp(int me);
  void complete_warp(int warp, unsigned mask);
  void try_activemask(int warp);
  void nobody_waits_for(int me, bool exiting);
  [[noreturn]] void deadlock();
  [[noreturn]] __attribute__((format(printf, 2, 3))) void die(const char* fmt, ...) const;
  std::string thread(int tid) const {
    const unsigned u = static_cast<unsigned>(tid);
    return format("(%u,%u,%u)", u % bdim_.x, u / bdim_.x % bdim_.y, u / (bdim_.x * bdim_.y));
  }

  int arrived_ = 0, first_exit_ = -1;  // the barrier phase in progress
  Site bsite_{};
  Op bop_ = Op::syncthreads;
  unsigned bcount_ = 0;
#if defined(FC_EMU_TSAN)
  unsigned char bar_tok_[2];  // by phase parity: a thread is at most one phase ahead
#endif
};

struct Context {  // of the CUDA thread running on this OS thread
  Block* block = nullptr;
  int tid = 0;
};
inline thread_local Context tl;

inline void Block::enter(int tid) {
  const unsigned u = static_cast<unsigned>(tid);
  threadIdx = uint3{u % bdim_.x, u / bdim_.x % bdim_.y, u / (bdim_.x * bdim_.y)};
  blockIdx = bidx_;
  blockDim = bdim_;
  gridDim = grid_;
  tl = Context{this, tid};
}

inline void Block::die(const char* fmt, ...) const {
  va_list ap;
  va_start(ap, fmt);
  const std::string s = vformat(fmt, ap);
  va_end(ap);
  fail(format("%s\n  in block (%u,%u,%u) of the kernel launched at %s", s.c_str(), bidx_.x, bidx_.y,
              bidx_.z, str(launch_).c_str()));
}

inline std::uint64_t Block::collective(int me, Op op, Site s, unsigned mask, std::uint64_t val,
                                       int arg, int width) {
  Lane& L = t[me];
  const bool barrier = is_barrier(op);
#if defined(FC_EMU_TSAN)
  // CUDA orders memory only among the threads that meet at a barrier or collective. Our lock
  // would order every pair of threads that ever take it, hiding real races, so TsanQuiet hides
  // it and the true edges are stated: each thread releases a slot on arrival and, once
  // released, acquires the slots of the threads it met.
  unsigned my_bar = L.bar_seq, peers[32], peer_mask = 0;
  __tsan_release(barrier ? &bar_tok_[my_bar & 1] : &L.tok[L.seq % 16]);
#endif
  std::uint64_t res;
  {
    auto lk = sched.lock();
    L.op = op, L.site = s, L.mask = mask, L.val = val, L.arg = arg, L.width = width;
    if (barrier)
      arrive_barrier(me);
    else
      arrive_warp(me);
    if (L.st == Lane::waiting) {
      if (running == 0) deadlock();  // nobody is left to release anyone
      sched.wait(lk, L, me / 32);
    }
    res = L.res;
#if defined(FC_EMU_TSAN)
    if (barrier) {
      ++L.bar_seq;
    } else {
      peer_mask = mask;
      std::memcpy(peers, L.peer_seq, sizeof peers);
      ++L.seq;
    }
#endif
  }
#if defined(FC_EMU_TSAN)
  if (barrier) __tsan_acquire(&bar_tok_[my_bar & 1]);
  for (unsigned m = peer_mask; m; m &= m - 1) {
    const int j = __builtin_ctz(m);
    __tsan_acquire(&t[(me & ~31) + j].tok[peers[j] % 16]);
  }
#endif
  return res;
}

inline void Block::arrive_barrier(int me) {
  Lane& L = t[me];
  if (first_exit_ >= 0)
    die("barrier divergence: thread %s reached %s at %s after thread %s exited; every thread of "
        "a block must reach every barrier",
        thread(me).c_str(), name(L.op), str(L.site).c_str(), thread(first_exit_).c_str());
  nobody_waits_for(me, false);
  if (arrived_ == 0) {
    bsite_ = L.site, bop_ = L.op, bcount_ = 0;
  } else if (bop_ != L.op || !same_site(bsite_, L.site)) {
    die("barrier divergence: thread %s reached %s at %s while %d thread(s) wait at %s at %s",
        thread(me).c_str(), name(L.op), str(L.site).c_str(), arrived_, name(bop_),
        str(bsite_).c_str());
  }
  bcount_ += L.val != 0;
  L.st = Lane::waiting;
  --running;
  if (++arrived_ < live) return try_activemask(me / 32);
  const unsigned r = bop_ == Op::syncthreads_or    ? bcount_ != 0
                     : bop_ == Op::syncthreads_and ? bcount_ == static_cast<unsigned>(live)
                                                   : bcount_;
  for (Lane& x : t) x.res = r, x.st = Lane::running;  // nobody exited: all are here
  running = live;
  arrived_ = 0;
  sched.wake_all();
}

inline void Block::arrive_warp(int me) {
  Lane& L = t[me];
  const int base = me & ~31, lane = me & 31, warp = me / 32, lanes = std::min(32, n - base);
  const unsigned mask = L.mask;
  L.st = Lane::waiting;
  --running;
  if (L.op == Op::activemask) return try_activemask(warp);
  auto at = [&] { return format("%s at %s", name(L.op), str(L.site).c_str()); };  // for errors
  if (L.width < 1 || L.width > 32 || (L.width & (L.width - 1)))
    die("warp collective error: %s: width %d is not a power of two <= 32", at().c_str(), L.width);
  if (!((mask >> lane) & 1))
    die("warp collective error: %s: calling lane %d of warp %d is not in its mask 0x%08x",
        at().c_str(), lane, warp, mask);
  if (lanes < 32 && (mask >> lanes))
    die("warp collective error: %s: mask 0x%08x names absent lanes %d..31 of warp %d, which has "
        "%d lane(s) (blockDim (%u,%u,%u))",
        at().c_str(), mask, lanes, warp, lanes, bdim_.x, bdim_.y, bdim_.z);
  bool ready = true;
  for (unsigned m = mask & ~(1u << lane); m; m &= m - 1) {
    const int j = __builtin_ctz(m);
    const Lane& J = t[base + j];
    if (J.st == Lane::exited)
      die("warp collective error: %s (mask 0x%08x): lane %d of warp %d has exited", at().c_str(),
          mask, j, warp);
    if (J.st == Lane::running) {
      ready = false;
    } else if (is_barrier(J.op)) {  // it needs us at the barrier, we need it here
      die("warp collective error: lane %d of warp %d waits at %s (mask 0x%08x) for lane %d, "
          "which reached %s at %s",
          lane, warp, at().c_str(), mask, j, name(J.op), str(J.site).c_str());
    } else if (J.op != L.op || !same_site(J.site, L.site)) {
      if ((J.mask >> lane) & 1)
        die("warp collective error: lanes %d and %d of warp %d wait for each other at different "
            "collectives: %s (mask 0x%08x) and %s at %s (mask 0x%08x)",
            lane, j, warp, at().c_str(), mask, name(J.op), str(J.site).c_str(), J.mask);
      ready = false;  // it may come here once its own collective completes
    } else if (J.mask != mask) {
      die("warp collective error: lanes %d and %d of warp %d reached %s with different masks "
          "0x%08x and 0x%08x",
          lane, j, warp, at().c_str(), mask, J.mask);
    }
  }
  if (ready)
    complete_warp(warp, mask);
  else
    try_activemask(warp);
}

inline void Block::complete_warp(int warp, unsigned mask) {
  Lane* const w = &t[warp * 32];
  const Op op = w[__builtin_ctz(mask)].op;
  unsigned ballot = 0;
  for (unsigned m = mask; m; m &= m - 1)
    if (w[__builtin_ctz(m)].val) ballot |= 1u << __builtin_ctz(m);
  for (unsigned m = mask; m; m &= m - 1) {
    const int j = __builtin_ctz(m), width = w[j].width, seg = j & ~(width - 1), arg = w[j].arg;
    int src = -1;  // the lane a shuffle reads
    switch (op) {
      case Op::shfl:
        src = seg + (arg & (width - 1));
        break;
      case Op::shfl_up:
        src = j - seg >= arg ? j - arg : j;
        break;
      case Op::shfl_down:
        src = j - seg + arg < width ? j + arg : j;
        break;
      case Op::shfl_xor:  // a later segment (or past the warp) returns the own value
        src = j ^ arg;
        if (src > 31 || (src & ~(width - 1)) > seg) src = j;
        break;
      case Op::ballot:
        w[j].res = ballot;
        break;
      case Op::any:
        w[j].res = ballot != 0;
        break;
      case Op::all:
        w[j].res = ballot == mask;
        break;
      case Op::match_any:
        w[j].res = 0;
        for (unsigned k = mask; k; k &= k - 1)
          if (w[__builtin_ctz(k)].val == w[j].val) w[j].res |= 1u << __builtin_ctz(k);
        break;
      default:
        w[j].res = 0;
        break;  // __syncwarp
    }
    if (src >= 0 && !((mask >> src) & 1))
      die("warp collective error: %s at %s: lane %d of warp %d reads lane %d, which is not in "
          "mask 0x%08x",
          name(op), str(w[j].site).c_str(), j, warp, src, mask);
    if (src >= 0) w[j].res = w[src].val;
  }
  for (unsigned m = mask; m; m &= m - 1) {
    Lane& J = w[__builtin_ctz(m)];
    J.st = Lane::running;
#if defined(FC_EMU_TSAN)
    for (unsigned k = mask; k; k &= k - 1) J.peer_seq[__builtin_ctz(k)] = w[__builtin_ctz(k)].seq;
#endif
  }
  running += __builtin_popcount(mask);
  sched.wake_warp(warp);
}

// __activemask() models convergence: once every lane of the warp has reached an __activemask,
// blocked elsewhere or exited, the lanes at the same __activemask call are the active set.
inline void Block::try_activemask(int warp) {
  Lane* const w = &t[warp * 32];
  unsigned set = 0;
  const Lane* first = nullptr;
  for (int j = 0; j < std::min(32, n - warp * 32); ++j) {
    if (w[j].st == Lane::running) return;  // undecided: it may still come here
    if (w[j].st != Lane::waiting || w[j].op != Op::activemask) continue;
    if (!first) first = &w[j];
    if (same_site(w[j].site, first->site)) set |= 1u << j;
  }
  for (unsigned m = set; m; m &= m - 1) w[__builtin_ctz(m)].res = set;
  for (unsigned m = set; m; m &= m - 1) w[__builtin_ctz(m)].st = Lane::running;
  running += __builtin_popcount(set);
  if (set) sched.wake_warp(warp);
}

// Aborts if a lane of me's warp waits at a collective whose mask names `me`, which is exiting
// or has reached a barrier: that lane could never be released.
inline void Block::nobody_waits_for(int me, bool exiting) {
  const int base = me & ~31, lane = me & 31;
  for (int j = base; j < std::min(n, base + 32); ++j) {
    const Lane& J = t[j];
    if (j == me || J.st != Lane::waiting || is_barrier(J.op) || !((J.mask >> lane) & 1)) continue;
    const std::string doing =
        exiting ? "exited" : format("reached %s at %s", name(t[me].op), str(t[me].site).c_str());
    die("warp collective error: lane %d of warp %d waits at %s at %s (mask 0x%08x) for lane %d, "
        "which %s",
        j & 31, base / 32, name(J.op), str(J.site).c_str(), J.mask, lane, doing.c_str());
  }
}

inline void Block::exit_thread(int me) {
  [[maybe_unused]] auto lk = sched.lock();
  t[me].st = Lane::exited;
  --live, --running;
  if (first_exit_ < 0) first_exit_ = me;
  nobody_waits_for(me, true);
  if (arrived_ > 0)
    die("barrier divergence: thread %s exited while %d thread(s) wait at %s at %s",
        thread(me).c_str(), arrived_, name(bop_), str(bsite_).c_str());
  try_activemask(me / 32);
  if (live > 0 && running == 0) deadlock();
}

inline void Block::deadlock() {  // lists the waiting threads, grouped by where they wait
  std::string groups;
  std::vector<bool> seen(t.size());
  for (int i = 0; i < n; ++i) {
    if (t[i].st != Lane::waiting || seen[i]) continue;
    int count = 0;
    for (int j = i; j < n; ++j)
      if (t[j].st == Lane::waiting && t[j].op == t[i].op && same_site(t[j].site, t[i].site) &&
          (is_barrier(t[i].op) || (j / 32 == i / 32 && t[j].mask == t[i].mask)))
        seen[j] = true, ++count;
    groups += format("\n  %d thread(s) from %s wait at %s at %s", count, thread(i).c_str(),
                     name(t[i].op), str(t[i].site).c_str());
    if (!is_barrier(t[i].op)) groups += format(" (warp %d, mask 0x%08x)", i / 32, t[i].mask);
  }
  die("deadlock: every live thread waits and none can proceed:%s", groups.c_str());
}

#if !defined(FC_EMU_FIBERS)
inline void Scheduler::run(Block& b, const std::function<void()>& body) {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(b.n));
  try {
    for (int i = 0; i < b.n; ++i)
      threads.emplace_back([&b, &body, i] { b.enter(i), body(), b.exit_thread(i); });
  } catch (const std::exception& e) {
    fail(format("cannot start %d threads (%s); build with -DFC_EMU_FIBERS", b.n, e.what()));
  }
  for (auto& th : threads) th.join();
}
#else
inline thread_local Scheduler* tl_fiber_scheduler = nullptr;

inline void Scheduler::run(Block& b, const std::function<void()>& body) {
  static std::vector<char*> stacks;  // reused by later launches (launches are serialised)
  const std::size_t size = FC_EMU_FIBER_STACK_BYTES, guard = sysconf(_SC_PAGESIZE);
  while (stacks.size() < static_cast<std::size_t>(b.n)) {  // a guard page below each stack
    void* p = mmap(nullptr, size + guard, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) fail("cannot map a fiber stack");
    mprotect(p, guard, PROT_NONE);
    stacks.push_back(static_cast<char*>(p) + guard);
  }
  block_ = &b, body_ = &body;
  fibers_.assign(static_cast<std::size_t>(b.n), Fiber{});
  getcontext(&main_.uc);  // a template for the fibers: getcontext costs a system call
  for (int i = 0; i < b.n; ++i) {
    Fiber& f = fibers_[i];
    f.stack = stacks[i], f.stack_size = size, f.uc = main_.uc;
    f.uc.uc_stack.ss_sp = stacks[i], f.uc.uc_stack.ss_size = size, f.uc.uc_link = nullptr;
    makecontext(&f.uc, &Scheduler::entry, 0);
  }
  tl_fiber_scheduler = this;
  current_ = 0, from_main_ = true;
  b.enter(0);
#if defined(FC_EMU_ASAN)
  __sanitizer_start_switch_fiber(&main_.fake_stack, fibers_[0].stack, fibers_[0].stack_size);
#endif
  swapcontext(&main_.uc, &fibers_[0].uc);  // returns once every fiber has exited
  landed(main_.fake_stack);
  if (b.live > 0) fail("internal error: live fibers but none runnable");
  tl_fiber_scheduler = nullptr;
  tl = Context{};
}

inline void Scheduler::hop(bool exiting) {
  Fiber& from = fibers_[current_];
  Fiber* to = &main_;
  for (int k = 1; k <= block_->n && to == &main_; ++k) {  // the next runnable, cyclically
    const int i = (current_ + k) % block_->n;
    if (block_->t[i].st == Lane::running) to = &fibers_[i], current_ = i;
  }
  if (to != &main_) block_->enter(current_);
  from_main_ = false;
#if defined(FC_EMU_ASAN)
  __sanitizer_start_switch_fiber(exiting ? nullptr : &from.fake_stack, to->stack, to->stack_size);
#endif
  if (exiting) setcontext(&to->uc);  // never resumed
  swapcontext(&from.uc, &to->uc);
  landed(from.fake_stack);
}

inline void Scheduler::entry() {
  Scheduler* s = tl_fiber_scheduler;
  s->landed(nullptr);
  (*s->body_)();
  s->block_->exit_thread(s->current_);
  s->hop(true);
}
#endif

// ---------------------------------------------------------------------------------------------
// Launches
inline thread_local cudaError_t last_error = cudaSuccess;
inline thread_local std::string last_error_detail;  // why the last failing call failed
inline cudaError_t set_error(cudaError_t e, std::string detail = {}) {
  last_error = e, last_error_detail = std::move(detail);
  return e;
}
inline std::mutex& state_mutex() {
  static std::mutex m;
  return m;
}
inline std::map<const void*, int>& smem_limits() {  // set by cudaFuncSetAttribute, per kernel
  static std::map<const void*, int> m;
  return m;
}
inline std::map<void*, std::size_t>& allocations() {  // live cudaMalloc blocks
  static std::map<void*, std::size_t> m;
  return m;
}

inline bool valid_launch(dim3 g, dim3 b, std::size_t smem, const void* kernel) {
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z || threads > kMaxThreads || b.x > kMaxBlock[0] ||
      b.y > kMaxBlock[1] || b.z > kMaxBlock[2] || g.x > kMaxGrid[0] || g.y > kMaxGrid[1] ||
      g.z > kMaxGrid[2]) {
    set_error(cudaErrorInvalidConfiguration,
              format("grid (%u,%u,%u), block (%u,%u,%u) = %llu threads; limits: 1024 threads, "
                     "block (1024,1024,64), grid (2^31-1,65535,65535), nothing empty",
                     g.x, g.y, g.z, b.x, b.y, b.z, threads));
    return false;
  }
  std::size_t limit = kDefaultSmem;
  {
    std::lock_guard<std::mutex> lk(state_mutex());
    auto it = smem_limits().find(kernel);
    if (it != smem_limits().end()) limit = static_cast<std::size_t>(it->second);
  }
  if (smem <= limit) return true;
  set_error(cudaErrorInvalidValue,
            format("%zu bytes of dynamic shared memory, but the kernel may use %zu (more needs "
                   "cudaFuncAttributeMaxDynamicSharedMemorySize, at most %zu)",
                   smem, limit, kMaxSmemOptin));
  return false;
}

// With FC_EMU_LAUNCH_LOG=path, every launch appends its kernel's name (as written at the
// FC_LAUNCH, template arguments dropped) to that file: the kernel-coverage check reads it.
inline void record_launch(const char* kernel_expr) {
  static const char* const path = std::getenv("FC_EMU_LAUNCH_LOG");
  if (!path) return;
  std::string name(kernel_expr);
  name = name.substr(name.find_first_not_of("( "));  // FC_LAUNCH(..., (k<A, B>)) is allowed
  name = name.substr(0, name.find('<'));
  name = name.substr(name.rfind(':') == std::string::npos ? 0 : name.rfind(':') + 1);
  static std::mutex log_mutex;
  std::lock_guard<std::mutex> lk(log_mutex);
  if (std::FILE* f = std::fopen(path, "a")) {
    std::fprintf(f, "%s\n", name.c_str());
    std::fclose(f);
  }
}

inline void run_grid(dim3 grid, dim3 block, std::size_t smem, const void* kernel, Site site,
                     const std::function<void()>& body) {
  if (tl.block) fail("kernel launched from device code at " + str(site) + ": not emulated");
  if (!valid_launch(grid, block, smem, kernel)) return;  // not run, like on a GPU
  static std::mutex run_mutex;  // one block alive at a time: what lets `__shared__` be static
  std::lock_guard<std::mutex> lk(run_mutex);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        // Exact size (ASan sees overflows), 0xFF bytes (unwritten floats read as NaN).
        void* dyn = std::malloc(smem);
        if (!dyn && smem) fail("out of memory for dynamic shared memory");
        std::memset(dyn, 0xFF, smem);
        Block b(grid, block, uint3{x, y, z}, dyn, site);
        b.sched.run(b, body);
        std::free(dyn);
      }
}

template <class... P>
struct Launch {
  dim3 grid, block;
  std::size_t smem;
  void (*kernel)(P...);
  Site site;
  const char* name;
  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "FC_LAUNCH: wrong number of kernel arguments");
    record_launch(name);
    // Converted once, like kernel parameters; each thread then gets its own copies.
    const auto params = std::tuple<std::decay_t<P>...>(std::forward<A>(args)...);
    run_grid(grid, block, smem, reinterpret_cast<const void*>(kernel), site,
             [&] { std::apply(kernel, params); });
  }
};
template <class... P>
Launch<P...> make_launch(dim3 grid, dim3 block, std::size_t smem, cudaStream_t,
                         void (*kernel)(P...), Site site, const char* name) {
  return Launch<P...>{grid, block, smem, kernel, site, name};
}

inline Context& self(const char* what) {
  if (!tl.block) fail(std::string(what) + " called outside a kernel");
  return tl;
}
inline std::uint64_t sync(Op op, Site s, unsigned mask = 0, std::uint64_t val = 0, int arg = 0,
                          int width = 32) {
  Context& c = self(name(op));
  return c.block->collective(c.tid, op, s, mask, val, arg, width);
}
template <class To, class From>
To bit_cast(From f) {
  static_assert(sizeof(To) == sizeof(From) && std::is_trivially_copyable_v<From>);
  To t;
  std::memcpy(&t, &f, sizeof t);
  return t;
}
template <class T>
std::uint64_t to_bits(T v) {  // shuffles carry up to 8 bytes
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "at most 8-byte values");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof v);
  return b;
}
template <class T>
T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
template <class T, class F>
T atomic_update(T* p, F f) {  // CAS loop for read-modify-writes without a builtin
  T old, next;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  do next = f(old);
  while (!__atomic_compare_exchange(p, &old, &next, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}
}  // namespace fc_emu

#define FC_LAUNCH(grid, block, smem, stream, kernel)                 \
  ::fc_emu::make_launch((grid), (block), (smem), (stream), (kernel), \
                        ::fc_emu::Site{__FILE__, __LINE__}, #kernel)
// A pointer, not an array: each block gets a fresh, exact-size, 0xFF-filled buffer.
#define FC_DYNAMIC_SHARED(type, name) \
  type* const name = static_cast<type*>(::fc_emu::self("dynamic shared memory").block->smem_)

// ---------------------------------------------------------------------------------------------
// Synchronisation and warp intrinsics; the trailing defaults record the caller's file:line.
#define FC_EMU_SITE \
  const char *fc_emu_file = __builtin_FILE(), unsigned fc_emu_line = __builtin_LINE()
#define FC_EMU_HERE \
  ::fc_emu::Site { fc_emu_file, fc_emu_line }
#define FC_EMU_SYNC(op, ...) ::fc_emu::sync(::fc_emu::Op::op, FC_EMU_HERE, __VA_ARGS__)

inline void __syncthreads(FC_EMU_SITE) { FC_EMU_SYNC(syncthreads, 0); }
inline int __syncthreads_or(int pred, FC_EMU_SITE) {
  return int(FC_EMU_SYNC(syncthreads_or, 0, pred != 0));
}
inline int __syncthreads_and(int pred, FC_EMU_SITE) {
  return int(FC_EMU_SYNC(syncthreads_and, 0, pred != 0));
}
inline int __syncthreads_count(int pred, FC_EMU_SITE) {
  return int(FC_EMU_SYNC(syncthreads_count, 0, pred != 0));
}
inline void __syncwarp(unsigned mask = 0xffffffffu, FC_EMU_SITE) { FC_EMU_SYNC(syncwarp, mask); }
template <class T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, FC_EMU_SITE) {
  return fc_emu::from_bits<T>(FC_EMU_SYNC(shfl, mask, fc_emu::to_bits(var), srcLane, width));
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, FC_EMU_SITE) {
  return fc_emu::from_bits<T>(FC_EMU_SYNC(shfl_up, mask, fc_emu::to_bits(var), int(delta), width));
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, FC_EMU_SITE) {
  return fc_emu::from_bits<T>(
      FC_EMU_SYNC(shfl_down, mask, fc_emu::to_bits(var), int(delta), width));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize, FC_EMU_SITE) {
  return fc_emu::from_bits<T>(FC_EMU_SYNC(shfl_xor, mask, fc_emu::to_bits(var), laneMask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred, FC_EMU_SITE) {
  return unsigned(FC_EMU_SYNC(ballot, mask, pred != 0));
}
inline int __any_sync(unsigned mask, int pred, FC_EMU_SITE) {
  return int(FC_EMU_SYNC(any, mask, pred != 0));
}
inline int __all_sync(unsigned mask, int pred, FC_EMU_SITE) {
  return int(FC_EMU_SYNC(all, mask, pred != 0));
}
template <class T>
unsigned __match_any_sync(unsigned mask, T value, FC_EMU_SITE) {
  return unsigned(FC_EMU_SYNC(match_any, mask, fc_emu::to_bits(value)));
}
inline unsigned __activemask(FC_EMU_SITE) { return unsigned(FC_EMU_SYNC(activemask, 0)); }
// Blocks run one at a time, so only ordering within a block matters, and that comes from the
// barriers and collectives. TSan cannot model fences: hand data over with barriers.
inline void __threadfence() { __asm__ __volatile__("" ::: "memory"); }
inline void __threadfence_block() { __asm__ __volatile__("" ::: "memory"); }
[[noreturn]] inline void __trap(FC_EMU_SITE) {
  fc_emu::fail("__trap() at " + fc_emu::str(FC_EMU_HERE));
}
#undef FC_EMU_SYNC
#undef FC_EMU_HERE
#undef FC_EMU_SITE

// Atomics: relaxed, like CUDA's; GCC's __atomic builtins on plain objects (what
// std::atomic_ref does, without needing C++20).
#define FC_EMU_ATOMIC(fn, T, expr)                                                  \
  inline T fn(T* p, T v) {                                                          \
    return fc_emu::atomic_update(p, [v](T old) -> T { return (void)old, (expr); }); \
  }
#define FC_EMU_ATOMIC_INTEGER(T)                                                             \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }       \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }       \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }         \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }       \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }     \
  inline T atomicCAS(T* p, T expected, T v) {                                                \
    __atomic_compare_exchange_n(p, &expected, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
    return expected;                                                                         \
  }                                                                                          \
  FC_EMU_ATOMIC(atomicMin, T, v < old ? v : old)                                             \
  FC_EMU_ATOMIC(atomicMax, T, v > old ? v : old)
FC_EMU_ATOMIC_INTEGER(int)
FC_EMU_ATOMIC_INTEGER(unsigned int)
FC_EMU_ATOMIC_INTEGER(unsigned long long)
FC_EMU_ATOMIC(atomicMin, long long, v < old ? v : old)
FC_EMU_ATOMIC(atomicMax, long long, v > old ? v : old)
FC_EMU_ATOMIC(atomicAdd, float, old + v)
FC_EMU_ATOMIC(atomicAdd, double, old + v)
FC_EMU_ATOMIC(atomicExch, float, v)
FC_EMU_ATOMIC(atomicInc, unsigned int, old >= v ? 0u : old + 1)
FC_EMU_ATOMIC(atomicDec, unsigned int, old == 0 || old > v ? v : old - 1)
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicSub(unsigned* p, unsigned v) {
  return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
#undef FC_EMU_ATOMIC_INTEGER
#undef FC_EMU_ATOMIC

// ---------------------------------------------------------------------------------------------
// Math and bit intrinsics. The fast-math ones are computed accurately here (the GPU's differ
// in the last bits: compare with tolerances).
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
// Single correctly rounded operations that are never contracted into an FMA: the volatile
// store forces the rounding, whatever -ffp-contract says.
#define FC_EMU_RN(fn, T, op) \
  inline T fn(T a, T b) {    \
    volatile T r = a op b;   \
    return r;                \
  }
FC_EMU_RN(__fadd_rn, float, +)
FC_EMU_RN(__fmul_rn, float, *)
FC_EMU_RN(__fdiv_rn, float, /)
FC_EMU_RN(__dadd_rn, double, +)
FC_EMU_RN(__dmul_rn, double, *)
FC_EMU_RN(__ddiv_rn, double, /)
#undef FC_EMU_RN
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(static_cast<unsigned>(x)) : 32; }
inline int __clzll(long long x) {
  return x ? __builtin_clzll(static_cast<unsigned long long>(x)) : 64;
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline long long __double_as_longlong(double x) { return fc_emu::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return fc_emu::bit_cast<double>(x); }
inline unsigned __float_as_uint(float x) { return fc_emu::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return fc_emu::bit_cast<float>(x); }
inline int __float_as_int(float x) { return fc_emu::bit_cast<int>(x); }
inline float __int_as_float(int x) { return fc_emu::bit_cast<float>(x); }
template <class T>
T __ldg(const T* p) {
  return *p;
}

// CUDA's min/max as functions, never macros (torch and the standard library use the names).
// Mixed arguments promote as CUDA's overloads do ((int, unsigned) -> unsigned); floating point
// uses fmin/fmax.
template <class A, class B,
          class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>)
    return std::fmin(C(a), C(b));
  else
    return C(b) < C(a) ? C(b) : C(a);
}
template <class A, class B,
          class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>)
    return std::fmax(C(a), C(b));
  else
    return C(a) < C(b) ? C(b) : C(a);
}

// ---------------------------------------------------------------------------------------------
// Runtime API: errors, memory (exact-size, 0xFF-filled host blocks), synchronous streams.
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = fc_emu::last_error;
  fc_emu::last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return fc_emu::last_error; }
namespace fc_emu {
struct ErrorInfo {
  cudaError_t code;
  const char *name, *text;
};
inline const ErrorInfo* error_info(cudaError_t e) {
  static const ErrorInfo table[] = {
      {cudaSuccess, "cudaSuccess", "no error"},
      {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
      {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
      {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
       "invalid configuration argument"},
      {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection",
       "invalid copy direction for memcpy"}};
  for (const ErrorInfo& info : table)
    if (info.code == e) return &info;
  return nullptr;
}
}  // namespace fc_emu
inline const char* cudaGetErrorName(cudaError_t e) {
  const fc_emu::ErrorInfo* info = fc_emu::error_info(e);
  return info ? info->name : "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  const fc_emu::ErrorInfo* info = fc_emu::error_info(e);
  return info ? info->text : "unrecognized error code";
}
inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  *p = bytes ? std::malloc(bytes) : nullptr;
  if (bytes && !*p) return fc_emu::set_error(cudaErrorMemoryAllocation);
  if (!bytes) return cudaSuccess;
  std::memset(*p, 0xFF, bytes);
  std::lock_guard<std::mutex> lk(fc_emu::state_mutex());
  fc_emu::allocations()[*p] = bytes;
  return cudaSuccess;
}
template <class T>
cudaError_t cudaMalloc(T** p, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
inline cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lk(fc_emu::state_mutex());
    if (fc_emu::allocations().erase(p) == 0)
      return fc_emu::set_error(cudaErrorInvalidValue,
                               "cudaFree of a pointer cudaMalloc did not return");
  }
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind) {
  if (static_cast<unsigned>(kind) > cudaMemcpyDefault)
    return fc_emu::set_error(cudaErrorInvalidMemcpyDirection);
  if (n) std::memcpy(dst, src, n);  // not memmove: ASan reports overlapping copies
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
  return cudaMemcpy(dst, src, n, kind);
}
inline cudaError_t cudaMemset(void* p, int value, std::size_t n) {
  if (n) std::memset(p, value, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, std::size_t n, cudaStream_t = nullptr) {
  return cudaMemset(p, value, n);
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<std::size_t>(value) > fc_emu::kMaxSmemOptin)
    return fc_emu::set_error(cudaErrorInvalidValue, fc_emu::format("attribute value %d", value));
  std::lock_guard<std::mutex> lk(fc_emu::state_mutex());
  fc_emu::smem_limits()[kernel] = value;
  return cudaSuccess;
}
template <class F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
