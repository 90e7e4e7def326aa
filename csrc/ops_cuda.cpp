// CUDA registrations of fastcredit's ops; built into fastcredit._C_cuda only in CUDA builds.
#include <Python.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "device_ops.h"

namespace fastcredit {
namespace {

void feedback_fill_cuda(at::Tensor& out, int64_t seed, const std::string& dist, double scale) {
  const c10::cuda::CUDAGuard guard(out.device());
  device::feedback_fill(out, seed, dist, scale, c10::cuda::getCurrentCUDAStream());
}

at::Tensor seeded_project_cuda(const at::Tensor& x, int64_t seed, int64_t cols,
                               const std::string& dist, double scale, bool transpose) {
  const c10::cuda::CUDAGuard guard(x.device());
  return device::seeded_project(x, seed, cols, dist, scale, transpose,
                                c10::cuda::getCurrentCUDAStream());
}

at::Tensor lra_error_cuda(const at::Tensor& a, const at::Tensor& d, double beta,
                          const std::string& activation, const std::string& error,
                          bool use_fprime, double negative_slope) {
  const c10::cuda::CUDAGuard guard(a.device());
  return device::lra_error(a, d, beta, activation, error, use_fprime, negative_slope,
                           c10::cuda::getCurrentCUDAStream());
}

at::Tensor sign_feedback_cuda(const at::Tensor& weight, const std::string& mode, double scale,
                              const std::optional<at::Tensor>& magnitude, int64_t seed,
                              const std::optional<at::Tensor>& step, const std::string& dist) {
  const c10::cuda::CUDAGuard guard(weight.device());
  return device::sign_feedback(weight, mode, scale, magnitude, seed, step, dist,
                               c10::cuda::getCurrentCUDAStream());
}

std::tuple<at::Tensor, at::Tensor> dfa_backward_epilogue_cuda(const at::Tensor& grad,
                                                              const at::Tensor& saved,
                                                              const std::string& activation,
                                                              double negative_slope,
                                                              bool saved_is_output) {
  const c10::cuda::CUDAGuard guard(grad.device());
  return device::dfa_backward_epilogue(grad, saved, activation, negative_slope, saved_is_output,
                                       c10::cuda::getCurrentCUDAStream());
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcredit, CUDA, m) {
  m.impl("feedback_fill_", &feedback_fill_cuda);
  m.impl("seeded_project", &seeded_project_cuda);
  m.impl("lra_error", &lra_error_cuda);
  m.impl("sign_feedback", &sign_feedback_cuda);
  m.impl("dfa_backward_epilogue", &dfa_backward_epilogue_cuda);
}

}  // namespace fastcredit

// Importing fastcredit._C_cuda runs the registration above; the module itself is empty.
extern "C" PyMODINIT_FUNC PyInit__C_cuda() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
