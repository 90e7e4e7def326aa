"""64-bit index math: the kernels that take strided tensors (feedback_fill_'s output,
seeded_project's x, dfa_backward_epilogue's grad and saved) address elements more than 2^32
entries into their storage, where a 32-bit product of index and stride would wrap.

The storage is a sparse file of 2^32 + 16 float32 entries (16 GiB of address space, a few pages
of disk and memory): only the handful of addressed entries are ever touched. The kernels whose
inputs are made contiguous first (sign_feedback, lra_error) index with int64 over numel; their
index types are in csrc/fastcredit/sign_feedback.h and csrc/cuda/lra.cuh."""

from __future__ import annotations

import pytest
import torch

from fastcredit import reference

import backends

FAR = 2**32 + 4  # truncated to 32 bits this is 4: an element of row 0
ENTRIES = 2**32 + 16


@pytest.fixture(scope="module")
def sparse_storage(tmp_path_factory):
    path = tmp_path_factory.mktemp("sparse") / "storage.f32"
    with open(path, "wb") as f:
        f.truncate(ENTRIES * 4)
    return torch.from_file(str(path), shared=True, size=ENTRIES, dtype=torch.float32)


def _far_views(storage):
    """[2, 3] with its second row, and [3, 2] with its second column, FAR entries away."""
    return [storage.as_strided((2, 3), (FAR, 1)), storage.as_strided((3, 2), (1, FAR))]


@pytest.mark.parametrize("native", ["cpu", "cuda_emulated"])
def test_fill_writes_entries_beyond_2_to_the_32(native, sparse_storage):
    backend = backends.get(native)
    for out in _far_views(sparse_storage):
        sparse_storage[:8].zero_()
        backend.op("feedback_fill_")(out, 3)
        assert torch.equal(out, reference.feedback_matrix(3, *out.shape))
        # a wrapped offset would have landed in the first entries instead
        assert torch.equal(sparse_storage[3:8], torch.zeros(5))
        sparse_storage[FAR:FAR + 3].zero_()


@pytest.mark.parametrize("native", ["cpu", "cuda_emulated"])
def test_strided_inputs_are_read_beyond_2_to_the_32(native, sparse_storage):
    backend = backends.get(native)
    generator = torch.Generator().manual_seed(0)
    for view in _far_views(sparse_storage):
        view.copy_(torch.randn(view.shape, generator=generator))
        x = view.contiguous()
        torch.testing.assert_close(backend.op("seeded_project")(view, 5, 4),
                                   reference.seeded_project(x, 5, 4))
        got = backend.op("dfa_backward_epilogue")(view, view, "tanh")
        torch.testing.assert_close(got, reference.dfa_backward_epilogue(x, x, "tanh"))
