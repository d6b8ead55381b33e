"""A pickle reader that admits only what the CIFAR python pickles hold.

``pickle.load`` runs whatever a file names (``os.system`` and friends): a crafted ``data_batch_1`` would
execute code on every worker. The CIFAR-10/100 python pickles are a dict of bytes/str keys holding a
uint8 ``numpy.ndarray`` (``data``), lists of ints (labels) and bytes/str (file names), so
:class:`CifarUnpickler` resolves only numpy's array reconstruction globals; any other global is refused
with :class:`pickle.UnpicklingError` naming it (``trainers.data.loading`` turns that into a one-paragraph error).
"""

from __future__ import annotations

import pickle
from typing import IO, Any

# (module, name) pairs a numpy array pickle refers to, numpy 1.x and 2.x spellings
ALLOWED = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 (out-of-band buffers)
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes with protocol 2 (numpy's array payload)
    }
)


class CifarUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` admits only :data:`ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load the global {module}.{name}: a CIFAR pickle holds only "
            "numpy arrays, lists, numbers and strings (a pickle naming other code "
            "could run it)"
        )


def load_cifar_pickle(fh: IO[bytes]) -> Any:
    """``pickle.load(fh, encoding="bytes")`` restricted to :data:`ALLOWED` globals."""
    return CifarUnpickler(fh, encoding="bytes").load()
