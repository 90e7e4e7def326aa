// fastcredit._C_emu (tests only, built with FASTCREDIT_EMULATE_CUDA=1): the CUDA kernels,
// compiled by the host compiler through the emulation header and registered as the ops of
// `torch.ops.fastcredit_emu` on CPU tensors. Same schemas and the same tensor glue
// (csrc/device_ops.h) as the real CUDA registration; only the stream is a placeholder.
#include <Python.h>
#include <torch/library.h>

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

void feedback_fill_emu(at::Tensor& out, int64_t seed, const std::string& dist, double scale) {
  device::feedback_fill(out, seed, dist, scale, nullptr);
}

at::Tensor seeded_project_emu(const at::Tensor& x, int64_t seed, int64_t cols,
                              const std::string& dist, double scale, bool transpose) {
  return device::seeded_project(x, seed, cols, dist, scale, transpose, nullptr);
}

at::Tensor lra_error_emu(const at::Tensor& a, const at::Tensor& d, double beta,
                         const std::string& activation, const std::string& error,
                         bool use_fprime, double negative_slope) {
  return device::lra_error(a, d, beta, activation, error, use_fprime, negative_slope, nullptr);
}

at::Tensor sign_feedback_emu(const at::Tensor& weight, const std::string& mode, double scale,
                             const std::optional<at::Tensor>& magnitude, int64_t seed,
                             const std::optional<at::Tensor>& step, const std::string& dist) {
  return device::sign_feedback(weight, mode, scale, magnitude, seed, step, dist, nullptr);
}

std::tuple<at::Tensor, at::Tensor> dfa_backward_epilogue_emu(const at::Tensor& grad,
                                                             const at::Tensor& saved,
                                                             const std::string& activation,
                                                             double negative_slope,
                                                             bool saved_is_output) {
  return device::dfa_backward_epilogue(grad, saved, activation, negative_slope, saved_is_output,
                                       nullptr);
}

}  // namespace

TORCH_LIBRARY(fastcredit_emu, m) { define_op_schemas(m); }

TORCH_LIBRARY_IMPL(fastcredit_emu, CPU, m) {
  m.impl("feedback_fill_", &feedback_fill_emu);
  m.impl("seeded_project", &seeded_project_emu);
  m.impl("lra_error", &lra_error_emu);
  m.impl("sign_feedback", &sign_feedback_emu);
  m.impl("dfa_backward_epilogue", &dfa_backward_epilogue_emu);
}

}  // namespace fastcredit

extern "C" PyMODINIT_FUNC PyInit__C_emu() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_emu", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
