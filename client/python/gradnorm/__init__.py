"""gradnorm: the true global gradient norm of a distributed training run, and
clipping by it, computed by gradnorm's C++ kernels.

    import gradnorm.torch as gn
    total = gn.get_grad_norm(model.parameters(), dp_cp_group, tp_group)
    gn.clip_grad_by_total_norm_(model.parameters(), max_grad_norm=1.0,
                                total_norm=total)

or, as a drop-in for torch.nn.utils.clip_grad_norm_:

    gn.clip_grad_norm_(model.parameters(), max_norm=1.0)

The low-level, framework-free API is in ``gradnorm._gradnorm``
(``TensorViews.from_dlpack`` over any DLPack producer, e.g. numpy arrays).
"""

import os as _os

# ./scripts/python names the directory of the built package. Scripts under
# client/python/ put the source tree (which has no _gradnorm.so) first on
# sys.path; this lets the extension be found there too.
_built = _os.environ.get("GRADNORM_PACKAGE_DIR")
if _built and _built not in __path__:
    __path__.append(_built)

from gradnorm import _gradnorm  # noqa: E402,F401  (fails early without the build)

__all__ = ["torch"]
