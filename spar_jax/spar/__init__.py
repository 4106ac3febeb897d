"""SPaR self-play: prompts and parsers, the batched judge, tree-search refinement, data building.

from spar_jax.spar import prompts, judge, tree, build
"""
