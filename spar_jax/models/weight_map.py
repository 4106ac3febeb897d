"""The vocabulary a model family uses to describe its checkpoint layout.

A family module (llama.py, glm.py) lists `WeightMap`s: which Hugging Face tensors make which of
our parameters, and the two pure reshapes between them. `hf.py` reads and writes checkpoints
from those lists, shape checks included. This module imports no family and not `hf`, so the
arrows run one way: hf -> families -> weight_map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from spar_jax.errors import SparError


class CheckpointError(SparError, ValueError):
    """A checkpoint directory or file we cannot load; the message names it."""


@dataclasses.dataclass(frozen=True)
class WeightMap:
    """HF tensors <-> our parameters.

    `hf_names` may contain `{i}` (the layer index) when `per_layer`; then our
    parameters are stacked along a leading layer axis. `to_jax` and `to_hf`
    take and return tuples in the order of `jax_paths` / `hf_names`, and use
    only array methods (.T, .reshape, slicing) or `concat`, so they run on
    numpy arrays and under `jax.eval_shape` alike.
    """

    jax_paths: tuple[tuple[str, ...], ...]
    hf_names: tuple[str, ...]
    to_jax: Callable[..., tuple]
    to_hf: Callable[..., tuple]
    per_layer: bool = False


def concat(arrays, axis=0):
    """Concatenate numpy arrays, or jax arrays under `eval_shape`."""
    if any(isinstance(a, jax.Array) for a in arrays):
        return jnp.concatenate(arrays, axis=axis)
    return np.concatenate(arrays, axis=axis)


def identity(name: str, path: tuple[str, ...], per_layer: bool = False) -> WeightMap:
    return WeightMap((path,), (name,), lambda w: (w,), lambda p: (p,), per_layer)


def transposed(name: str, path: tuple[str, ...], per_layer: bool = False) -> WeightMap:
    return WeightMap((path,), (name,), lambda w: (w.T,), lambda p: (p.T,), per_layer)


def projection_in(name: str, path: tuple[str, ...], d: int, heads: int, head_dim: int):
    """nn.Linear [heads*head_dim, d] <-> [d, heads, head_dim]."""
    return WeightMap(
        (path,),
        (name,),
        lambda w: (w.T.reshape(d, heads, head_dim),),
        lambda p: (p.reshape(d, heads * head_dim).T,),
        per_layer=True,
    )


def projection_out(name: str, path: tuple[str, ...], d: int, heads: int, head_dim: int):
    """nn.Linear [d, heads*head_dim] <-> [heads, head_dim, d]."""
    return WeightMap(
        (path,),
        (name,),
        lambda w: (w.T.reshape(heads, head_dim, d),),
        lambda p: (p.reshape(heads * head_dim, d).T,),
        per_layer=True,
    )


def head_bias(name: str, path: tuple[str, ...], heads: int, head_dim: int):
    """Bias [heads*head_dim] <-> [heads, head_dim]."""
    return WeightMap(
        (path,),
        (name,),
        lambda b: (b.reshape(heads, head_dim),),
        lambda p: (p.reshape(heads * head_dim),),
        per_layer=True,
    )
