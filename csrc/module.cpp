// The Python module fastcredit._C: loading it registers the ops; build_info() says how it
// was built.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastcredit native ops (CPU kernels and op schemas)";
  m.def("build_info", [] {
    py::dict info;
    info["version"] = FASTCREDIT_VERSION;
    info["torch_version"] = FASTCREDIT_TORCH_VERSION;
    info["with_cuda"] = static_cast<bool>(FASTCREDIT_WITH_CUDA);
    // The CUDA release of the torch the kernels were compiled against; "" in a CPU-only build.
    info["cuda_version"] = FASTCREDIT_CUDA_VERSION;
    info["cuda_archs"] = FASTCREDIT_CUDA_ARCHS;
#ifdef _OPENMP
    info["openmp"] = true;
    info["openmp_max_threads"] = omp_get_max_threads();
#else
    info["openmp"] = false;
    info["openmp_max_threads"] = 1;
#endif
    info["intra_op_threads"] = at::get_num_threads();
    return info;
  });
}
