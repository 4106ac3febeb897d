"""XLA flags for the test suite (the in-process run and the commands tests start).

Tests are dominated by compiling tiny programs. XLA's backend optimisation level 0 compiles
about 3x faster, and the older CPU loop emitters (fusion emitters off) about 2x faster again;
the programs run slower, which tiny models do not notice. Both only change how XLA generates
CPU code, never what a program computes.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
