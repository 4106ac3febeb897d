"""spar_jax: SPaR (self-play with tree-search refinement) in JAX/Flax."""

__version__ = "0.1.0"
