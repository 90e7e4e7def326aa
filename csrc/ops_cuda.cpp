// CUDA registrations of fastcredit's ops; built into fastcredit._C_cuda only in CUDA builds.
#include <Python.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "device_ops.h"

namespace fastcredit {
namespace {

// device_ops.h's Context on a GPU: built only after the op has checked its arguments' devices.
struct CudaContext {
  explicit CudaContext(at::Device device) : guard(device) {}
  cudaStream_t stream() const { return c10::cuda::getCurrentCUDAStream(); }
  unsigned max_grid_y() const { return cuda::kMaxGridY; }
  c10::cuda::CUDAGuard guard;
};

}  // namespace

TORCH_LIBRARY_IMPL(fastcredit, CUDA, m) {
  m.impl("feedback_fill_", &device::feedback_fill<CudaContext>);
  m.impl("seeded_project", &device::seeded_project<CudaContext>);
  m.impl("lra_error", &device::lra_error<CudaContext>);
  m.impl("sign_feedback", &device::sign_feedback<CudaContext>);
  m.impl("dfa_backward_epilogue", &device::dfa_backward_epilogue<CudaContext>);
}

}  // namespace fastcredit

// Importing fastcredit._C_cuda runs the registration above; the module itself is empty.
extern "C" PyMODINIT_FUNC PyInit__C_cuda() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
