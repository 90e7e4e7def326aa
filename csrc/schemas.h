// The op schemas, declared once: csrc/ops.cpp defines them in the `fastcredit` namespace, and
// the test-only emulated library defines the same ones in `fastcredit_emu`.
#pragma once

#include <torch/library.h>

namespace fastcredit {

inline void define_op_schemas(torch::Library& m) {
  // out[r, c] = scale * F(seed)[r, c]; F's entries depend only on (seed, r, c).
  m.def("feedback_fill_(Tensor(a!) out, int seed, str dist=\"uniform\", float scale=1.0) -> ()");
  // x @ F(seed)[:K, :cols] (or x @ F(seed)[:cols, :K].T when transpose), F never stored.
  m.def(
      "seeded_project(Tensor x, int seed, SymInt cols, str dist=\"uniform\", float scale=1.0, "
      "bool transpose=False) -> Tensor");
  // LRA-E error units: e = err(f(a), f(a - beta d)) [* f'(a) when use_fprime], elementwise;
  // f replaced by the surrogate in both terms when one is named ('hardtanh').
  m.def(
      "lra_error(Tensor pre_activation, Tensor displacement, float beta, "
      "str activation=\"tanh\", str error=\"gaussian\", bool use_fprime=False, "
      "float negative_slope=0.01, str? surrogate=None) -> Tensor");
  // scale * |M| ⊙ sign(W), W of any rank >= 2 viewed as [out, rest]; |M| by mode: 1 ('scalar'),
  // |magnitude| ('stored'), |F(seed)| ('seeded'), |F(step_seed(seed, step))| ('seeded_step').
  // step is an int64 scalar tensor, so a draw counter can be a buffer that torch.compile
  // passes as a graph input (an int would be a constant, recompiled at every new value).
  m.def(
      "sign_feedback(Tensor weight, str mode, float scale=1.0, Tensor? magnitude=None, "
      "int seed=0, Tensor? step=None, str dist=\"uniform\") -> Tensor");
  // DFA backward epilogue: delta = grad * f'(a) and grad_bias = delta.sum(0), with f' taken
  // from `saved`: the pre-activation a, or the output f(a) when saved_is_output.
  m.def(
      "dfa_backward_epilogue(Tensor grad, Tensor saved, str activation, "
      "float negative_slope=0.01, bool saved_is_output=False) -> (Tensor delta, "
      "Tensor grad_bias)");
}

}  // namespace fastcredit
