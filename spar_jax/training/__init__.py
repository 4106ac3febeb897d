"""Training: sequence log-probs and preference losses, DPO and SFT trainers, optimisers, checkpoints.

Submodules are imported explicitly (``from spar_jax.training import losses``) so that importing
this package stays cheap.
"""
