// fastcredit._C_emu (tests only, built with FASTCREDIT_EMULATE_CUDA=1): the CUDA kernels,
// compiled by the host compiler through the emulation header and registered as the ops of
// `torch.ops.fastcredit_emu` on CPU tensors. Same schemas and the same tensor glue
// (csrc/device_ops.h) as the real CUDA registration; only the stream is a placeholder.
#include <Python.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

// clang-format off: the emulation header must come before any kernel source
#include "cuda_emu.h"
#include "cuda/lra.cuh"
#include "cuda/dfa_epilogue.cuh"
#include "cuda/projection.cuh"
#include "cuda/sign_feedback.cuh"
// clang-format on
#include "device_ops.h"
#include "schemas.h"

namespace fastcredit {
namespace {

// device_ops.h's Context for the emulation, whose device is the CPU. Like a CUDAGuard given a
// tensor of another device, it fails with an internal assert: a mixed-device call that builds
// the context before checking its arguments shows up in the tests. FC_EMU_MAX_GRID_Y lowers
// the grid.y limit so tests reach the kernels' loops over grid.y with small shapes.
struct EmuContext {
  explicit EmuContext(at::Device device) {
    TORCH_INTERNAL_ASSERT(device.is_cpu(), "emulated device context built for ", device);
  }
  cudaStream_t stream() const { return nullptr; }
  unsigned max_grid_y() const {
    const char* limit = std::getenv("FC_EMU_MAX_GRID_Y");
    return limit ? static_cast<unsigned>(std::stoul(limit)) : cuda::kMaxGridY;
  }
};

}  // namespace

TORCH_LIBRARY(fastcredit_emu, m) { define_op_schemas(m); }

TORCH_LIBRARY_IMPL(fastcredit_emu, CPU, m) {
  m.impl("feedback_fill_", &device::feedback_fill<EmuContext>);
  m.impl("seeded_project", &device::seeded_project<EmuContext>);
  m.impl("lra_error", &device::lra_error<EmuContext>);
  m.impl("sign_feedback", &device::sign_feedback<EmuContext>);
  m.impl("dfa_backward_epilogue", &device::dfa_backward_epilogue<EmuContext>);
}

}  // namespace fastcredit

extern "C" PyMODINIT_FUNC PyInit__C_emu() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_emu", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
