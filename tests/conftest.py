"""Test setup: offline before any heavy import; fixtures live in tests/fixtures/ and load as plugins."""

import os

from offline import enforce_offline

enforce_offline()


def _interpret_triton_without_cuda() -> None:
    """Without a CUDA GPU, zhiku's Triton kernels run in Triton's interpreter (read when triton is imported)."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


_interpret_triton_without_cuda()

pytest_plugins = [
    "tests.fixtures.pdfs",
    "tests.fixtures.services",
    "tests.fixtures.markers",
    "tests.fixtures.vision",
    "tests.fixtures.network",
    "tests.fixtures.browser",
]
