"""Argument checks shared by the estimators (DESIGN §3). None of them syncs with the device,
except under ``validate=True``."""

from __future__ import annotations

import torch
from torch import Tensor


def check_same_shape(**tensors: Tensor) -> None:
    """All tensors have the shape of the first; the error names both arguments and shapes."""
    items = list(tensors.items())
    first, ref = items[0]
    for name, t in items:
        if not isinstance(t, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.shape != ref.shape:
            raise ValueError(
                f"{name}: expected the shape of {first} {tuple(ref.shape)}, got {tuple(t.shape)}"
            )


def check_flags(**flags: Tensor) -> None:
    for name, t in flags.items():
        if t.dtype != torch.bool:
            raise ValueError(f"{name}: expected a bool tensor, got dtype {t.dtype}")


def check_unit(name: str, x, data: Tensor, validate: bool) -> Tensor | float:
    """γ or λ: a float in [0, 1], or a tensor broadcastable to the data (range checked under validate)."""
    if isinstance(x, Tensor):
        try:
            torch.broadcast_shapes(x.shape, data.shape)
        except RuntimeError:
            raise ValueError(
                f"{name}: expected a float or a tensor broadcastable to {tuple(data.shape)}, got shape {tuple(x.shape)}"
            ) from None
        if validate and not ((x >= 0) & (x <= 1)).all():  # NaN fails both comparisons
            raise ValueError(f"{name}: expected values in [0, 1] (no NaN)")
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= float(x) <= 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1], got {x!r}")
    return float(x)


def check_finite(validate: bool, **tensors: Tensor) -> None:
    if validate:
        for name, t in tensors.items():
            if not torch.isfinite(t).all():
                raise ValueError(f"{name}: contains NaN or inf")


def compute_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32 (bf16 would lose the signal)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def to_time_last(time_dim: int, data: Tensor, *others):
    """Move ``time_dim`` to the end of the data tensors, broadcasting tensor γ/λ to the data first."""
    if not -data.ndim <= time_dim < data.ndim:
        raise ValueError(
            f"time_dim: expected a dimension of a {data.ndim}-d tensor, got {time_dim}"
        )
    dtype = compute_dtype(data)
    move = time_dim % data.ndim != data.ndim - 1  # a no-op view still costs a call per tensor
    out = []
    for x in (data, *others):
        if isinstance(x, Tensor):
            x = x.expand(data.shape) if x.shape != data.shape else x
            x = x.movedim(time_dim, -1) if move else x
            x = x.to(dtype) if x.is_floating_point() else x
        out.append(x)
    return out


def from_time_last(x: Tensor, time_dim: int, dtype: torch.dtype) -> Tensor:
    """Undo ``to_time_last`` on a result: time back to ``time_dim``, in the input's ``dtype``."""
    if time_dim % x.ndim != x.ndim - 1:
        x = x.movedim(-1, time_dim)
    return x.to(dtype)


def check_inputs(validate: bool, gamma, lmbda=None, **tensors: Tensor):
    """Every episode estimator's checks at once: the tensors share the first one's shape,
    ``terminated``/``truncated`` are bool, rewards and log-probs are finite (under ``validate``),
    γ (and λ) lie in [0, 1]; the other tensors (rewards, values, log-probs) are floating point, so
    that "the input dtype out" never truncates to integers. Returns the checked ``(gamma, lmbda)``."""
    check_same_shape(**tensors)
    flags = ("terminated", "truncated")
    check_flags(**{k: t for k, t in tensors.items() if k in flags})
    for name, t in tensors.items():
        if name not in flags and not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    check_finite(
        validate,
        **{k: t for k, t in tensors.items() if k in ("rewards", "target_logp", "behavior_logp")},
    )
    data = next(iter(tensors.values()))
    gamma = check_unit("gamma", gamma, data, validate)
    lmbda = None if lmbda is None else check_unit("lmbda", lmbda, data, validate)
    return gamma, lmbda


def check_new_name(table: dict, name: str, replace: bool) -> None:
    """A registry name (estimators, policy losses): identifier-like, and not taken unless
    ``replace``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: expected an identifier-like string, got {name!r}")
    if name in table and not replace:
        raise ValueError(f"name: {name!r} is already registered (pass replace=True to override)")


def check_token_tensors(mask: Tensor, **tensors: Tensor) -> Tensor:
    """Token data: ``mask`` is ``[B, L]`` and every tensor has its shape and is floating point.
    Returns the mask as a float in the tensors' compute dtype (float32 without tensors)."""
    if not isinstance(mask, Tensor) or mask.ndim != 2:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a [B, L] tensor, got {shape}")
    check_same_shape(mask=mask, **tensors)
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    first = next(iter(tensors.values()), None)
    return mask.to(compute_dtype(first) if first is not None else torch.float32)
