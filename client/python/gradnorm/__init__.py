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

from gradnorm import _gradnorm  # noqa: F401  (fails early if the build is missing)

__all__ = ["torch"]
