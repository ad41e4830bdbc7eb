"""P8 — phase transition: in grokking, held-out accuracy jumps while the training loss stays smooth.

Seed: framework-v13-global-geometry, Phase transitions: "phase transition at λ* where ∂Φ/∂λ
jumps while L(θ, λ) stays smooth"; "Grokking is the canonical example" (Power et al. 2022).

Named: the Lab's modular-addition recipe (p = 97, Nanda et al.'s set-up), seeds 0, 1, 2.
Per seed, from ``phase_transitions_summary`` (Φ = held-out accuracy, equal windows of training
time as wide as the largest checkpoint gap): the jump ratio R (largest rise / median |ΔΦ|,
capped at 1e6) and the training loss's change ΔL over the same window as a share of its range.
The claim holds for a seed when R >= 10 *and* ΔL < 1%; both in one margin, positive iff both hold:

    m = min(log10 R - 1, log10(0.01 / max(ΔL, 1e-6)))        (in decades; 4 at most from ΔL)

Criterion, fixed before the data: the mean margin over seeds > 0, judged by its 95% Student-t
interval over seeds (n - 1 degrees of freedom: with 3 seeds the bootstrap has 10 distinct
resamples, too few for an interval). It is supported only if the seeds agree that both
conditions hold, refuted if they agree that one fails. λ* is reported with the same interval.
"""

import numpy as np
import pytest
from scipy import stats

from atlas import Criterion

RECIPE = "modular-addition"
SEEDS = tuple(f"lab:{RECIPE}@{seed}" for seed in (0, 1, 2))
SOURCE = "framework-v13-global-geometry: Phase transitions ('∂Φ/∂λ jumps while L(θ, λ) stays smooth'; grokking)"
JUMP, SMOOTH, FLOOR = 10.0, 0.01, 1e-6
CRITERION = Criterion(
    statistic="mean over seeds of min(log10 jump ratio - 1, log10(0.01 / training-loss change over the jump window))",
    direction=">", threshold=0.0, ci="95% Student-t interval over seeds",
    sample="every checkpoint of each seed's run; Φ = held-out accuracy on all held-out pairs")


def margin(row) -> float:
    return min(np.log10(max(row["jump_ratio"], FLOOR)) - np.log10(JUMP),
               np.log10(SMOOTH) - np.log10(max(row["loss_change"], FLOOR)))


def t_interval(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


@pytest.mark.prediction(
    id="P8-grokking-phase-transition", form="named", model=SEEDS, source=SOURCE, needs=("phase_transitions",),
    claim="Trained on modular addition, a transformer's held-out accuracy jumps (largest rise >= 10x its median "
          "rise) at a step where its training loss changes by less than 1% of its range, in every seed.",
    criterion=CRITERION)
def test_grokking_is_a_phase_transition(prediction):
    per_seed = {}
    for name in prediction.model_names:
        summary = prediction.evidence["phase_transitions", name]["phase_transitions_summary"]
        row = summary.set_index("order_parameter").loc["heldout_acc"]
        per_seed[name] = {"margin": margin(row), "step": float(row["step"]), "jump_ratio": float(row["jump_ratio"]),
                          "capped": bool(row["capped"]), "loss_change": float(row["loss_change"])}
    margins = [s["margin"] for s in per_seed.values()]
    steps = [s["step"] for s in per_seed.values()]
    prediction.conclude(effect=float(np.mean(margins)), ci=t_interval(margins), n=len(margins), evidence={
        "seeds": per_seed, "lambda_star": float(np.mean(steps)), "lambda_star_ci": list(t_interval(steps)),
        "seeds_satisfying": int(sum(m > 0 for m in margins))})
