"""The train state: everything a run needs to continue exactly where it stopped.

Parameters, optimizer state, the update counter and the data position (which epoch, which
batch of it comes next) are one ``flax.struct.dataclass``. The train step takes it and returns
the next one; checkpoints save it whole (except ``ref_params``, the frozen DPO reference, which
is reloaded from the round's starting model on resume). Nothing in a step is random (no
dropout), so there is no RNG key: the data order is a function of the seed and the epoch.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Any  # nested dict of arrays


@flax.struct.dataclass
class TrainState:
    """One training run's state (a pytree; every field is an array or a pytree of arrays).

    ``epoch`` and ``batch_index`` are the position of the next batch to read: a run resumed
    from this state asks the data pipeline for batch ``batch_index`` of epoch ``epoch`` (the
    shuffle of each epoch is a function of the seed and the epoch, so the order is the same).
    """

    step: jax.Array  # [] int32: optimizer updates applied so far
    params: Params  # float32 master weights (compute may be bfloat16)
    opt_state: optax.OptState
    epoch: jax.Array  # [] int32: epoch of the next batch
    batch_index: jax.Array  # [] int32: index of the next batch within that epoch
    ref_params: Params | None = None  # frozen reference for online DPO; never checkpointed

    @classmethod
    def create(
        cls,
        params: Params,
        tx: optax.GradientTransformation,
        *,
        ref_params: Params | None = None,
    ) -> TrainState:
        """A fresh state at step 0, epoch 0, batch 0."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            epoch=jnp.zeros((), jnp.int32),
            batch_index=jnp.zeros((), jnp.int32),
            ref_params=ref_params,
        )

    def at_position(self, epoch: int, batch_index: int) -> TrainState:
        """The same state with the data position set (called by the loop after each step).

        The new scalars are placed like the old ones: a jitted step compiled for committed
        (or sharded) inputs would compile again for an uncommitted one.
        """
        return self.replace(
            epoch=_placed_like(epoch, self.epoch),
            batch_index=_placed_like(batch_index, self.batch_index),
        )

    def committed(self) -> TrainState:
        """Every array committed to a device (leaves already placed keep their sharding).

        A fresh state is uncommitted while a restored or sharded one is committed; making both
        alike lets one compilation of the step serve both.
        """
        device = jax.local_devices()[0]

        def commit(x):
            if isinstance(x, jax.Array) and not x.committed:
                return jax.device_put(x, device)
            return x

        return jax.tree.map(commit, self)

    def without_reference(self) -> TrainState:
        """What a checkpoint stores: the state with ``ref_params`` dropped."""
        return self.replace(ref_params=None)


def _placed_like(value: int, like: Any) -> jax.Array:
    if isinstance(like, jax.Array) and like.committed:
        return jax.device_put(np.asarray(value, np.int32), like.sharding)
    return jnp.asarray(value, jnp.int32)
