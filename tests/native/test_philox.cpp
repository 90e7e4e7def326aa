// Native tests of the host+device RNG headers, built by CMake without Python or torch:
// Philox4x32-10 against Random123's known answers, the exact log/sincos used by Box-Muller
// against libm, and feedback tiles against entry-by-entry generation.
#include <cmath>
#include <cstdio>
#include <vector>

#include "fastcredit/feedback_tile.h"
#include "fastcredit/philox.h"

using namespace fastcredit;

static int failures = 0;
#define EXPECT(cond, ...)                              \
  do {                                                 \
    if (!(cond)) {                                     \
      ++failures;                                      \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);               \
      std::fprintf(stderr, "\n");                      \
    }                                                  \
  } while (0)

static void test_known_answers() {
  struct Kat {
    uint32_t counter[4], key[2], expected[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& kat : kats) {
    const Philox4 counter{{kat.counter[0], kat.counter[1], kat.counter[2], kat.counter[3]}};
    const Philox4 out = philox4x32_10(counter, kat.key[0], kat.key[1]);
    for (int i = 0; i < 4; ++i) {
      EXPECT(out.v[i] == kat.expected[i], "philox word %d: got %08x want %08x", i, out.v[i],
             kat.expected[i]);
    }
  }
  // The feedback layout: entry (0, 0..3) of seed 0 is the first known answer.
  const Philox4 block = feedback_block(0, 0, 0);
  EXPECT(block.v[0] == 0x6627e8d5 && block.v[3] == 0x9b00dbd8, "feedback_block(0, 0, 0)");
}

static void test_exact_math_against_libm() {
  double worst_log = 0, worst_trig = 0;
  for (uint32_t k = 1; k <= (1u << 24); k += 4093) {
    worst_log = std::fmax(worst_log, std::fabs(exact::log_of_int(k) - std::log(double(k))));
  }
  for (uint32_t j = 0; j < (1u << 24); j += 4091) {
    double s, c;
    exact::sincos_2pi(j, s, c);
    const double t = 2 * M_PI * (j / 16777216.0);
    worst_trig = std::fmax(worst_trig, std::fmax(std::fabs(s - std::sin(t)),
                                                 std::fabs(c - std::cos(t))));
  }
  EXPECT(worst_log < 1e-14, "log_of_int error %g", worst_log);
  EXPECT(worst_trig < 1e-15, "sincos_2pi error %g", worst_trig);
}

static double entry(uint64_t seed, int64_t r, int64_t c, Dist dist, double scale) {
  double values[4];
  feedback_group(seed, r, c / 4, dist, scale, values);
  return values[c % 4];
}

static void test_tiles_match_entries() {
  // Tiles at offsets that are not multiples of 4, plain and transposed.
  const int64_t row0 = 3, col0 = 5, rows = 7, cols = 10;
  for (bool transposed : {false, true}) {
    const FeedbackTile tile{42, Dist::kNormal, 0.5, row0, col0, rows, cols, transposed};
    std::vector<float> dst(rows * cols, -99.f);
    const int64_t groups = feedback_tile_groups_per_row(tile);
    for (int64_t r = 0; r < feedback_tile_f_rows(tile); ++r)
      for (int64_t g = 0; g < groups; ++g) write_feedback_group(tile, r, g, dst.data(), cols, 1);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        const double want = transposed ? entry(42, col0 + j, row0 + i, Dist::kNormal, 0.5)
                                       : entry(42, row0 + i, col0 + j, Dist::kNormal, 0.5);
        EXPECT(dst[i * cols + j] == static_cast<float>(want), "tile (%d) entry %lld,%lld",
               int(transposed), (long long)i, (long long)j);
      }
    }
  }
}

int main() {
  test_known_answers();
  test_exact_math_against_libm();
  test_tiles_match_entries();
  if (failures) {
    std::fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  std::printf("native philox tests: all passed\n");
  return 0;
}
