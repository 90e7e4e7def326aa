// nvcc translation unit for the LRA-E error-unit kernel: instantiates the launchers.
#include "cuda/lra.cuh"

namespace fastcredit::cuda {

template cudaError_t launch_lra_error<float>(const float*, const float*, float*, int64_t, double,
                                             Activation, LocalError, bool, double, cudaStream_t);
template cudaError_t launch_lra_error<double>(const double*, const double*, double*, int64_t,
                                              double, Activation, LocalError, bool, double,
                                              cudaStream_t);

}  // namespace fastcredit::cuda
