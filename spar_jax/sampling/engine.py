"""`Engine`: continuous batching over a fixed set of decode slots.

    engine = sampling.Engine(cfg, params, slots=32, max_length=1024)
    engine.submit(prompt_ids, sampling.SamplingParams(temperature=1.0, max_new_tokens=256),
                  n=5, rng=jax.random.key(0), tag="node-3")
    for c in engine.step():   # or engine.run() to drain the queue
        c.tag, c.sample, c.tokens, c.finish_reason

Each submitted request becomes n sample rows in a FIFO queue. A round of `step` fills the
free slots from the queue (one prefill per distinct prompt, shared by its samples; a
prompt whose head matches one already in a slot's cache copies that prefix instead of
recomputing it), then runs the compiled decode loop (slots.py) until enough slots are free
to refill, and hands back the samples that finished. Which slot a sample lands in, and what
runs beside it, does not change its tokens: sample j of a request draws step s with
fold_in(fold_in(rng, j), s) from its own logits.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spar_jax.models import ModelConfig
from spar_jax.sampling import slots as device
from spar_jax.sampling.params import (
    SamplingParams,
    batch_bucket,
    check_context,
    check_prompt,
    length_bucket,
)


@dataclasses.dataclass
class Completion:
    """One finished sample."""

    tag: Any  # the request's tag (its submit index when none was given)
    sample: int  # j in 0..n-1
    tokens: list[int]  # generated ids, stop token excluded
    logprobs: list[float]  # their log-probs under the untempered, unfiltered model
    finish_reason: str  # "stop" or "length"


@dataclasses.dataclass
class EngineStats:
    """What the engine did, for tests, logs and benchmarks."""

    prefill_rows: int = 0  # prompt rows run through `extend` (padding excluded)
    prefill_tokens: int = 0  # prompt tokens computed (padding excluded)
    prefix_tokens_reused: int = 0  # prompt tokens copied from a slot instead of computed
    extend_calls: int = 0
    decode_calls: int = 0
    decode_steps: int = 0  # steps of the decode loop (each advances every running slot)
    slot_steps: int = 0  # decode_steps x slots
    generated_tokens: int = 0  # tokens handed back (stop tokens excluded)


@dataclasses.dataclass
class _Request:
    prompt: np.ndarray  # [T] int32
    params: SamplingParams  # scalar knobs
    keys: np.ndarray  # [n, 2] uint32 raw keys, one per sample
    tag: Any
    stops: np.ndarray  # [Ns] int32 padded with -1


def _key_data(rng) -> jax.Array:
    if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)
    return rng


def sample_keys(rng: jax.Array, ids: np.ndarray) -> np.ndarray:
    """Raw keys [len(ids), 2] of fold_in(rng, id) for each id (one per sample)."""
    folded = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(_key_data(rng), jnp.asarray(ids))
    return np.asarray(jax.random.key_data(folded), np.uint32).reshape(len(ids), -1)


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if diff.size else m


class Engine:
    """Continuous batching of sampling requests over `slots` decode slots.

    Args:
      cfg, params: the model.
      slots: B, samples decoded at once. Under `sharding.context` they are split over the
        data axes (B must divide by their size) and KV heads over tensor.
      max_length: S, cache positions per slot: prompt + max_new_tokens of any request.
      num_stop_ids: the most stop ids one request may pass.
      min_bucket: the smallest length bucket (prompt chunks, attention views).
      prefill_chunk: the longest piece of one prompt computed in one call; longer prompts
        are prefilled piece by piece.
      prefill_tokens: the most tokens (rows x padded length) of one prefill call.
      min_prefix: the shortest shared prompt head worth copying from another slot.
      chunk_steps: the most decode steps between two returns to the host.
      refill: how many slots to let free before pausing decode to refill them, as a
        fraction of the slots (at least one, at most the queued samples).
      heads_major: carry the cache heads-major inside the decode loop (`slots.decode`);
        None picks it on a CPU. The tokens are the same either way.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        params,
        *,
        slots: int = 32,
        max_length: int = 1024,
        num_stop_ids: int = 8,
        min_bucket: int = 16,
        prefill_chunk: int = 512,
        prefill_tokens: int = 8192,
        min_prefix: int = 16,
        chunk_steps: int = 256,
        refill: float = 0.125,
        heads_major: bool | None = None,
    ):
        self.cfg, self.B = cfg, slots
        self.S = min(length_bucket(max_length, min_bucket), cfg.max_position_embeddings)
        self.S = max(self.S, max_length)
        self.num_stop_ids, self.min_bucket = num_stop_ids, min_bucket
        self.prefill_chunk = max(min_bucket, prefill_chunk)
        self.prefill_tokens, self.min_prefix = prefill_tokens, min_prefix
        self.chunk_steps, self.refill = chunk_steps, refill
        self.heads_major = device.heads_major_default() if heads_major is None else heads_major
        self.top = {k: v for k, v in params.items() if k != "layers"}
        self.layers = jax.jit(device.split_layers)(params)
        self.state = device.init_slots(cfg, slots, self.S, num_stop_ids)
        self.stats = EngineStats()
        self._queue: deque[tuple[_Request, int]] = deque()  # (request, sample j)
        self._slot_row: list[tuple[_Request, int] | None] = [None] * slots
        self._slot_prompt: list[np.ndarray | None] = [None] * slots  # KV valid in [0, len)
        self._submitted = 0
        self._lengths = np.zeros(slots, np.int32)  # host copy after each round

    # --- requests ------------------------------------------------------------------------

    def submit(
        self,
        prompt,
        sampling_params: SamplingParams | None = None,
        *,
        n: int = 1,
        rng: jax.Array | None = None,
        tag: Any = None,
        sample_keys_: np.ndarray | None = None,
    ) -> Any:
        """Queues n samples of `prompt`; returns the request's tag.

        sampling_params: scalar knobs (per request). rng: required for temperature > 0;
        sample j uses fold_in(rng, j). sample_keys_: raw keys [n, 2] instead of rng (as
        `generate` passes them).
        """
        sp = sampling_params or SamplingParams()
        knobs = {k: np.asarray(getattr(sp, k)) for k in ("temperature", "top_p", "top_k")}
        knobs["max_new_tokens"] = np.asarray(sp.max_new_tokens)
        if any(v.ndim for v in knobs.values()):
            raise ValueError("Engine.submit takes scalar SamplingParams; submit one request each")
        ids = check_prompt(self.cfg, self._submitted if tag is None else tag, prompt)
        new = int(sp.max_new_tokens)
        check_context(self.cfg, [len(ids)], [new])
        if len(ids) + new > self.S:
            raise ValueError(
                f"request {tag!r}: {len(ids)} prompt + {new} new tokens exceed the engine's "
                f"max_length={self.S}; build the Engine with a larger max_length"
            )
        if n < 1:
            raise ValueError(f"n={n} must be >= 1")
        if len(sp.stop_token_ids) > self.num_stop_ids:
            raise ValueError(
                f"{len(sp.stop_token_ids)} stop ids but the engine takes {self.num_stop_ids}; "
                "raise num_stop_ids"
            )
        if sample_keys_ is None:
            if rng is None:
                if float(sp.temperature) > 0:
                    raise ValueError("temperature > 0 samples: pass rng=jax.random.key(seed)")
                rng = jax.random.key(0)
            sample_keys_ = sample_keys(rng, np.arange(n))
        stops = np.full(self.num_stop_ids, -1, np.int32)
        stops[: len(sp.stop_token_ids)] = sp.stop_token_ids
        tag = self._submitted if tag is None else tag
        self._submitted += 1
        request = _Request(np.asarray(ids, np.int32), sp, sample_keys_, tag, stops)
        self._queue.extend((request, j) for j in range(n))
        return tag

    @property
    def queued(self) -> int:
        """Samples waiting for a slot."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Samples in slots."""
        return sum(r is not None for r in self._slot_row)

    def run(self) -> list[Completion]:
        """Steps until every queued and running sample has finished."""
        out = []
        while self._queue or self.running:
            out.extend(self.step())
        return out

    # --- one round -----------------------------------------------------------------------

    def step(self) -> list[Completion]:
        """Refills free slots, runs one decode chunk, returns the samples that finished."""
        self._refill()
        if self.running == 0:
            return []
        running = [b for b, r in enumerate(self._slot_row) if r is not None]
        longest = int(max(self._lengths[b] for b in running))
        view = min(length_bucket(longest + 1, self.min_bucket), self.S)
        free = self.B - len(running)
        if self._queue:
            want = max(1, min(len(self._queue), int(self.B * self.refill)))
            target = free + want
        else:
            target = self.B + 1
        self.state, steps = device.decode(
            self.cfg,
            self.top,
            self.layers,
            self.state,
            jnp.int32(self.chunk_steps),
            jnp.int32(target),
            view=view,
            heads_major=self.heads_major,
        )
        steps = int(steps)
        self.stats.decode_calls += 1
        self.stats.decode_steps += steps
        self.stats.slot_steps += steps * self.B
        return self._collect()

    def _collect(self) -> list[Completion]:
        s = self.state
        done, lengths = jax.device_get((s.done, s.lengths))
        self._lengths = np.array(lengths)
        finished = [b for b, r in enumerate(self._slot_row) if r is not None and done[b]]
        if not finished:
            return []
        tokens, logprobs, count, stopped = jax.device_get(
            (s.tokens, s.logprobs, s.count, s.stopped)
        )
        out = []
        for b in finished:
            request, j = self._slot_row[b]
            c = int(count[b])
            out.append(
                Completion(
                    request.tag,
                    j,
                    tokens[b, :c].tolist(),
                    logprobs[b, :c].tolist(),
                    "stop" if stopped[b] else "length",
                )
            )
            self.stats.generated_tokens += c
            self._slot_row[b] = None
        return out

    # --- filling slots -------------------------------------------------------------------

    def _refill(self) -> None:
        free = [b for b, r in enumerate(self._slot_row) if r is None]
        if not free or not self._queue:
            return
        popped: list[list] = []  # [request, samples]
        for _ in free:
            if not self._queue:
                break
            request, j = self._queue.popleft()
            if popped and popped[-1][0] is request:
                popped[-1][1].append(j)
            else:
                popped.append([request, [j]])
        # A prompt reuses the longest head (at least min_prefix tokens, never the whole
        # prompt) cached in a running slot, or in a free slot that it then fills itself
        # (the head is read before it is overwritten), or, in a second wave, in a slot this
        # round's first wave filled. Other free slots may be overwritten in any order.
        running = [
            (b, p) for b, p in enumerate(self._slot_prompt) if b not in free and p is not None
        ]
        available = list(free)
        first, second = [], []
        for request, samples in popped:
            cached = [
                (b, self._slot_prompt[b]) for b in available if self._slot_prompt[b] is not None
            ]
            own = self._best_prefix(request.prompt, cached)
            dest = [own[0]] if own[1] else []
            dest += [b for b in available if b not in dest][: len(samples) - len(dest)]
            available = [b for b in available if b not in dest]
            for b, j in zip(dest, samples, strict=True):
                self._slot_row[b] = (request, j)
            best = max(own, self._best_prefix(request.prompt, running), key=lambda x: x[1])
            lead = self._best_prefix(request.prompt, [(g[2][0], g[0].prompt) for g in first])
            if lead[1] > best[1]:
                second.append((request, samples, dest, lead))
            else:
                first.append((request, samples, dest, best))
        for wave in (first, second):
            self._prefill(wave)
            for request, _, dest, _ in wave:
                for b in dest:
                    self._slot_prompt[b] = request.prompt
                    self._lengths[b] = len(request.prompt)

    def _best_prefix(self, prompt, candidates) -> tuple[int, int]:
        """(slot, tokens) of the longest usable shared head; (0, 0) when none."""
        best = (0, 0)
        for b, other in candidates:
            k = min(_common_prefix(prompt, other), len(prompt) - 1)
            if k >= self.min_prefix and k > best[1]:
                best = (b, k)
        return best

    def _prefill(self, wave) -> None:
        """Writes each group's prompt after its shared head into its slots, piece by piece."""
        pieces = []  # (piece index, group, start, end)
        for group in wave:
            request, _, _, (_, reused) = group
            self.stats.prefix_tokens_reused += reused
            starts = range(reused, len(request.prompt), self.prefill_chunk)
            for i, start in enumerate(starts):
                end = min(start + self.prefill_chunk, len(request.prompt))
                pieces.append((i, group, start, end))
        # Piece i of a prompt reads what piece i - 1 wrote: run them in order.
        for i in range(max((p[0] for p in pieces), default=-1) + 1):
            batch = sorted((p for p in pieces if p[0] == i), key=lambda p: p[3] - p[2])
            while batch:
                T = length_bucket(batch[-1][3] - batch[-1][2], self.min_bucket)
                # A power of two within the token budget: calls are padded to one (a program
                # per row bucket), so 21 rows would have run as 32, half of them padding.
                rows = min(len(batch), 1 << max(0, (self.prefill_tokens // T).bit_length() - 1))
                call, batch = batch[-rows:], batch[:-rows]
                self._extend(call, T)

    def _extend(self, call, T: int) -> None:
        P = batch_bucket(len(call), self.B)
        R = batch_bucket(max(len(p[1][2]) for p in call), self.B)
        Ns = self.num_stop_ids
        tokens = np.zeros((P, T), np.int32)
        length = np.ones(P, np.int32)
        start = np.zeros(P, np.int32)
        source = np.zeros(P, np.int32)
        dest = np.full((P, R), self.B, np.int32)
        last = np.zeros(P, bool)
        temperature = np.zeros((P, R), np.float32)
        top_p = np.ones((P, R), np.float32)
        top_k = np.zeros((P, R), np.int32)
        max_new = np.ones((P, R), np.int32)
        stop_ids = np.full((P, R, Ns), -1, np.int32)
        keys = np.zeros((P, R, 2), np.uint32)
        longest_start = 0
        for r, (i, (request, samples, slots_, (src, _)), lo, hi) in enumerate(call):
            tokens[r, : hi - lo] = request.prompt[lo:hi]
            length[r], start[r] = hi - lo, lo
            # The first piece reads the shared head from its source; later pieces their own slot.
            source[r] = src if i == 0 else slots_[0]
            longest_start = max(longest_start, lo)
            dest[r, : len(slots_)] = slots_
            last[r] = hi == len(request.prompt)
            sp = request.params
            temperature[r], top_p[r], top_k[r] = sp.temperature, sp.top_p, sp.top_k
            max_new[r] = sp.max_new_tokens
            stop_ids[r] = request.stops
            keys[r, : len(samples)] = request.keys[samples]
            self.stats.prefill_rows += 1
            self.stats.prefill_tokens += hi - lo
        view = min(length_bucket(max(longest_start, 1), self.min_bucket), self.S)
        rows = device.NewRows(
            tokens=tokens,
            length=length,
            start=start,
            source=source,
            dest=dest,
            last=last,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new=max_new,
            stop_ids=stop_ids,
            keys=keys,
        )
        self.state = device.extend(self.cfg, self.top, self.layers, self.state, rows, view=view)
        self.stats.extend_calls += 1
