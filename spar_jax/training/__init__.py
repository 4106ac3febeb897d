"""Training: the DPO and SFT trainers and what they are built from.

* Entry points: ``dpo.train_dpo(config)``, ``sft.train_sft(config)``; ``run_config`` turns the
  experiment ``ConfigDict`` into a frozen ``RunConfig``.
* Numerics: ``logprobs`` (fused LM head + log-softmax), ``losses`` (per-example losses),
  ``preference`` (the loss registry and reported metrics), ``steps`` (pure train steps),
  ``optim`` (AdamW and HF schedules).
* Running: ``model_io`` (load / export models), ``compiled`` (steps jitted on the mesh),
  ``placement`` (mesh, rules, state and batch placement, memory check), ``runner`` and
  ``loop`` (resume, batches, checkpoints, metrics), ``reference`` (the DPO reference table),
  ``state``, ``checkpoint``, ``metrics``.
* Data: ``records`` / ``files`` / ``layouts`` / ``formats`` / ``skips`` (reading records),
  ``data`` / ``batching`` (tokenized examples and batches); ``toy`` (the demos' toy world).

Submodules are imported explicitly (``from spar_jax.training import losses``) so that importing
this package stays cheap.
"""
