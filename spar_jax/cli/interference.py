"""`python -m spar_jax interference --config configs/demo_interference.py --workdir DIR`.

The paper's interfering-factor experiment (Figure 4, task 1) on the synthetic world: DPO on
independently sampled pairs against DPO on tree-search-refined pairs, from the same start,
with task success and the upper-case share of the answers over training steps
(`spar_jax.tasks.interference`). Writes DIR/report.md, DIR/interference.png and
DIR/results.json; rerunning the same command reuses the finished stages.
"""

from __future__ import annotations

import os


def main(argv: list[str]) -> int:
    from spar_jax import configs

    config, workdir = configs.with_workdir(
        argv, "python -m spar_jax interference", __doc__, "configs/demo_interference.py",
        "where the experiment writes",
    )  # fmt: skip

    from spar_jax.tasks import interference

    results = interference.run(config, workdir)
    for arm, r in results["arms"].items():
        first, last = r["curve"][0], r["curve"][-1]
        print(
            f"{arm:>8}: success {first['success']:.3f} -> {last['success']:.3f}, upper-case "
            f"share {first['upper_ratio']:.3f} -> {last['upper_ratio']:.3f} "
            f"over {last['step']} steps"
        )
    print(f"report: {os.path.join(workdir, 'report.md')}")
    print(f"plot:   {os.path.join(workdir, 'interference.png')}")
    return 0
