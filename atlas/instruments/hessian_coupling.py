"""Hessian coupling: the off-diagonal Hessian between a layer's attention heads.

The Framework's *coupling* is H_ij = ∂²L/∂θ_i∂θ_j, the off-diagonal Hessian (Sagun et al.
2017): how far moving one weight changes the gradient of another. The ``coupling``
instrument's attention-map correlation is a behavioural proxy for it; this instrument
measures the Hessian itself, between the heads of a layer. With H_ab the block of the
Hessian (w.r.t. the layer's attention parameters) whose rows are unit a's parameters and
whose columns are unit b's,

    c_ab = ‖H_ab‖_F / sqrt(‖H_aa‖_F ‖H_bb‖_F)          a ≠ b

is 0 where moving b's weights leaves a's gradient unchanged (to second order) and of order
1 where the cross-curvature is as large as the units' own. It is symmetric (H_ba = H_abᵀ),
blind to the loss's scale, and unchanged by any rotation within a unit's parameters. It is
what a block-diagonal curvature model (e.g. K-FAC's, Martens & Grosse 2015, at the finer
grain of heads) discards. Where H is positive semi-definite, H = GᵀG, c_ab <= 1 (Cauchy-Schwarz:
‖G_aᵀG_b‖²_F = <G_aG_aᵀ, G_bG_bᵀ>_F <= ‖H_aa‖_F ‖H_bb‖_F); it exceeds 1 only where H is
indefinite (saddle directions) or by estimation noise.

Units. The unit is the smallest set of heads that shares no parameter with another:

* multi-head attention (GPT-2, OPT): a head -- its slices of the query, key and value
  projections (weights and biases) and its columns of the output projection's input;
* grouped-query attention (Llama; SmolLM2: 9 query heads over 3 KV heads, tiny-llama 4
  over 2): a KV group -- the group's key and value slices together with the query and
  output slices of every query head that reads them (query heads g*G ... (g+1)*G - 1 for
  G = ``kv_groups``).

So the units partition the layer's head-indexed parameters and H_ab (a ≠ b) is off the
block diagonal. Counting a shared K/V slice with each of its query heads instead would put
that slice's own curvature H_kk into the "cross" block of two heads of one group. The
output projection's bias belongs to no head and is left out (frozen). The comparable
attention-probe numbers are its ``*_cross_kv`` variants (pairs in different KV groups).

Estimator. For a probe v ~ N(0, I) on unit b's parameters (zero elsewhere), (Hv)_a = H_ab v
and E‖H_ab v‖² = tr(H_abᵀ H_ab) = ‖H_ab‖²_F (the Gaussian Frobenius-norm estimator,
Gratton & Titley-Peloquin 2018; Hutchinson 1990 for traces): ONE Hessian-vector product
per probe of b gives every row block a, H_bb included, so a layer costs units x probes
products. As ‖H_ab‖_F = ‖H_ba‖_F, the probes of a and of b both estimate it: 2P draws off
the diagonal, P on it (the two sets are identically distributed: Σ σ_i² z_i² over H_ab's
singular values). The squared norms are unbiased; c_ab, a ratio of their roots, is
consistent, with an O(1/P) bias. One draw's relative variance is 2 Σσ⁴ / (Σσ²)², about
2 / (effective rank of the block).

Standard errors: the delta method on log c_ab = ½ log N_ab - ¼ log N_aa - ¼ log N_bb. Probe
k of unit u enters it through w_uk,x = (S_uk,x / N_ux - S_uk,u / N_uu) / 4 for the pair
{u, x}, S_uk,x = ‖(H v_uk)_x‖², N the means over probes, so Var log c_ab = var_k(w_bk,a) / P
+ var_k(w_ak,b) / P with the sample variance over probes (hence ``probes >= 2``). A layer's
coupling is the mean of c_ab over its pairs; pairs share probes, so their errors are
correlated, and its variance sums, per unit u, the variance over u's probes of
Σ_x c_ux w_uk,x / n_pairs. The 95% CI is taken on the log scale (m exp(±t se/m)), with
Student's t at the Welch-Satterthwaite degrees of freedom of that sum (Satterthwaite
1946): with 2 probes per unit the variance has about one degree of freedom per unit. On
test matrices (``tests/test_hessian_coupling.py``) these errors match the spread over
repeated probes within 30%, the CI covers 99% (2 probes) and 93% (8 probes) of the time,
and the O(1/P) bias of c is below a third of its spread. They are the probes' error for
this batch's Hessian: which passages form the batch is a further, unmeasured variation.

Loss and products as in ``hessian``: the token-weighted mean NLL of one batch
(``hessian_batch``: passages with the domains taking turns until ``max_tokens`` tokens are
scored), Hessian-vector products by double backward (Pearlmutter 1994) under eager
attention with every parameter outside the layer's units frozen. Probes come from a CPU
generator seeded with the layer number: a layer gets the same probes on any device and
whichever other layers are selected.

Cost: a product costs about two backward passes through the layers above the one probed,
and building a layer's gradient about one product. SmolLM2-135M (3 units per layer), CPU
seconds per product on one thread of this project's 2-core CPU:

    max_tokens (batch)     layer 0   layer 15   layer 29
    32   (1 x 33)          0.63      0.31       0.12
    64   (1 x 65)          0.68      0.42       0.13
    128  (2 x 84)          1.74      1.04       0.34
    256  (3 x 128)         4.34      2.08       0.60

so every layer at 2 probes and 64 tokens (the quick profile: 30 x (3 x 2 + 1) products)
takes 104 CPU seconds on one thread; 8 probes at 256 tokens (full) about 16 times that.

Tables. ``hessian_coupling_probes`` (primary: what was measured), one row per (layer,
probed unit, probe, unit): the squared norm S. ``hessian_coupling`` (``pair_coupling``):
per (layer, unit_a < unit_b) c_ab, its standard error and the Frobenius norms.
``hessian_coupling_layers`` (``layer_hessian_coupling``): per layer the mean c_ab over
pairs with its standard error and CI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from .._anatomy import eager_attention, head_axes, head_dim, kv_groups
from .._bounds import at_least
from .._corpus import Corpus
from .._errors import SettingsError
from .._models import LoadedModel
from .._progress import progress_bar
from ._registry import instrument
from .hessian import LAYERS, BlockHessian, hessian_batch, mean_nll, only_block_requires_grad, select_layers

__all__ = ["HeadUnits", "head_units", "layer_hessian_coupling", "measure_hessian_coupling", "pair_coupling",
           "probe_norms", "probe_rows"]


@dataclass(frozen=True)
class HeadUnits:
    """A layer's head-indexed attention parameters split into units (see the module docstring)."""

    params: list[nn.Parameter]  # the parameters holding a unit's slice, in model.named_parameters() order
    owner: torch.Tensor  # [n] long: the unit of each element of the params flattened in order; -1: none
    n_units: int
    heads_per_unit: int  # query heads in a unit: kv_groups(model)

    def n_params(self) -> np.ndarray:
        """Parameters in each unit [n_units]."""
        return torch.bincount(self.owner[self.owner >= 0], minlength=self.n_units).numpy()


def head_units(model: nn.Module, layer: int) -> HeadUnits:
    """Layer ``layer``'s units: a head on multi-head attention, a KV group under grouped-query attention."""
    named = dict(model.named_parameters())
    group, width = kv_groups(model), head_dim(model)
    n_units = model.config.num_attention_heads // group
    span = {"q": group * width, "o": group * width, "k": width, "v": width}  # a unit's extent on each axis
    owners: dict[str, torch.Tensor] = {}
    for kind, axes in head_axes(model, layer).items():
        for axis in axes:
            owner = owners.setdefault(axis.param, torch.full(named[axis.param].shape, -1, dtype=torch.long))
            for unit in range(n_units):
                owner.narrow(axis.axis, axis.offset + unit * span[kind], span[kind]).fill_(unit)
    names = [name for name in named if name in owners]
    return HeadUnits([named[n] for n in names], torch.cat([owners[n].reshape(-1) for n in names]), n_units, group)


def probe_norms(hvp: Callable[[torch.Tensor], torch.Tensor], owner: torch.Tensor, n_units: int, probes: int,
                generator: torch.Generator, step: Callable[[], object] = lambda: None) -> np.ndarray:
    """S[b, k, a] = ‖(H v_bk)_a‖² for ``probes`` probes v_bk ~ N(0, I) on each unit b: [U, P, U].

    ``hvp``: v [n] -> Hv [n] on ``owner``'s device; ``owner`` [n] the unit of each element (-1: none);
    probes drawn on the CPU from ``generator``; ``step`` is called after each product."""
    owned = owner >= 0
    labels = owner[owned]  # [n_owned]
    S = np.empty((n_units, probes, n_units))
    for b in range(n_units):
        on_b = (owner == b).cpu()  # [n]
        for k in range(probes):
            v = torch.randn(owner.numel(), generator=generator) * on_b  # [n]
            hv = hvp(v.to(owner.device))[owned].double()  # [n_owned]
            S[b, k] = torch.zeros(n_units, dtype=torch.float64, device=hv.device).index_add_(0, labels, hv ** 2).cpu()
            step()
    return S


def probe_rows(layer: int, S: np.ndarray, n_params: np.ndarray, heads_per_unit: int, n_tokens: int) -> pd.DataFrame:
    """A layer's S [U, P, U] (``probe_norms``) as rows of ``hessian_coupling_probes``; n_params [U] per unit."""
    probed, probe, unit = (x.ravel() for x in np.indices(S.shape))
    return pd.DataFrame({"layer": layer, "probed": probed, "probe": probe, "unit": unit, "sq_norm": S.ravel(),
                         "n_params": n_params[unit], "heads_per_unit": heads_per_unit, "n_tokens": n_tokens})


def _layer_array(rows: pd.DataFrame) -> np.ndarray:
    """A layer's rows of ``hessian_coupling_probes`` as S[probed, probe, unit] [U, P, U]."""
    n_units, probes = rows["unit"].nunique(), rows["probe"].nunique()
    ordered = rows.sort_values(["probed", "probe", "unit"])
    return ordered["sq_norm"].to_numpy(float).reshape(n_units, probes, n_units)


def _linearised(S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(c [U, U], N [U, U], w [U, P, U]) from S [U, P, U].

    N[a, b] estimates ‖H_ab‖²_F (off the diagonal from both units' probes); w[u, k, x] is probe k of
    unit u's term in log c_ux (module docstring; 0 at x = u); c's diagonal is 1."""
    units = np.arange(S.shape[0])
    M = S.mean(axis=1)  # [U(probed), U]
    N = (M + M.T) / 2  # ‖H_ab‖²: from the probes of b (rows a) and of a (rows b)
    diag = np.diag(M)  # [U]: ‖H_aa‖²
    np.fill_diagonal(N, diag)
    c = np.sqrt(N) / np.sqrt(np.sqrt(np.outer(diag, diag)))  # [U, U]
    # a block that is exactly zero gives 0 on every probe: its term is 0, not 0/0
    cross = np.divide(S, N[:, None, :], out=np.zeros_like(S), where=N[:, None, :] > 0)  # [U, P, U]
    own = S[units, :, units] / diag[:, None]  # [U, P]: S[u, k, u] / N_uu
    return c, N, (cross - own[:, :, None]) / 4


def pair_coupling(probes: pd.DataFrame, *, n_resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """c_ab per (layer, unit_a < unit_b) with its delta-method standard error (schema ``hessian_coupling``).

    ``n_resamples`` and ``seed`` are the summaries' common signature: the delta method draws nothing."""
    rows = []
    for layer, g in probes.groupby("layer", sort=True):
        S = _layer_array(g)
        c, N, w = _linearised(S)
        n_probes = S.shape[1]
        var = w.var(axis=1, ddof=1) / n_probes  # [U(probed), U]: probe set of u's share of Var log c_ux
        for a, b in zip(*np.triu_indices(len(c), k=1)):
            rows.append({"layer": int(layer), "unit_a": int(a), "unit_b": int(b), "coupling": float(c[a, b]),
                         "stderr": float(c[a, b] * np.sqrt(var[b, a] + var[a, b])), "n_probes": n_probes,
                         "frobenius_ab": float(np.sqrt(N[a, b])), "frobenius_aa": float(np.sqrt(N[a, a])),
                         "frobenius_bb": float(np.sqrt(N[b, b])), "heads_per_unit": int(g["heads_per_unit"].iloc[0]),
                         "n_tokens": int(g["n_tokens"].iloc[0])})
    return pd.DataFrame(rows)


def layer_hessian_coupling(probes: pd.DataFrame, *, n_resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """Per layer the mean c_ab over its pairs, with standard error and CI (schema ``hessian_coupling_layers``).

    ``n_resamples`` and ``seed`` are the summaries' common signature: the delta method draws nothing."""
    rows = []
    for layer, g in probes.groupby("layer", sort=True):
        S = _layer_array(g)
        c, _, w = _linearised(S)
        n_units, n_probes = S.shape[:2]
        n_pairs = n_units * (n_units - 1) // 2
        mean = float(c[np.triu_indices(n_units, k=1)].mean())
        off = c - np.eye(n_units)  # [U, U]: c_ux, 0 on the diagonal
        Z = (w * off[:, None, :]).sum(axis=2) / n_pairs  # [U, P]: probe k of unit u's term in the mean
        V = Z.var(axis=1, ddof=1) / n_probes  # [U]: each unit's probe set's share of Var(mean)
        se = float(np.sqrt(V.sum()))
        dof = V.sum() ** 2 / (V ** 2 / (n_probes - 1)).sum() if se > 0 else np.inf  # Welch-Satterthwaite
        spread = float(np.exp(stats.t.ppf(0.975, dof) * se / mean)) if mean > 0 else 1.0
        rows.append({"layer": int(layer), "coupling": mean, "stderr": se, "ci_low": mean / spread,
                     "ci_high": mean * spread, "n_pairs": n_pairs, "n_probes": n_probes,
                     "heads_per_unit": int(g["heads_per_unit"].iloc[0]), "n_tokens": int(g["n_tokens"].iloc[0])})
    return pd.DataFrame(rows)


@instrument("hessian_coupling", version="1", measures=("hessian_coupling_probes",), terms=("coupling",),
            summaries={"hessian_coupling": pair_coupling, "hessian_coupling_layers": layer_hessian_coupling})
def measure_hessian_coupling(lm: LoadedModel, corpus: Corpus, *, layers: Annotated[str, LAYERS] = "all",
                             probes: Annotated[int, at_least(2)] = 8, max_tokens: Annotated[int, at_least(1)] = 256,
                             tokens_per_passage: Annotated[int, at_least(0)] = 0,
                             progress: bool = True) -> dict[str, pd.DataFrame]:
    """Off-diagonal Hessian between a layer's heads by probes: one row per (layer, probed unit, probe, unit).

    Settings:
        layers: "all" or a comma list of layer numbers
        probes: Gaussian probes per unit (head, or KV group under grouped-query attention); at least 2
        max_tokens: tokens of the one batch the loss is taken on, the domains taking turns
        tokens_per_passage: at most this many tokens of each passage (0: whole passages)
    """
    model = lm.model
    chosen = select_layers(model, layers)
    units = {layer: head_units(model, layer) for layer in chosen}
    if (n_units := units[chosen[0]].n_units) < 2:
        raise SettingsError(f"{lm.name} has {n_units} unit per layer (KV heads): coupling between heads needs two")
    ids, mask = hessian_batch(lm, corpus, max_tokens, tokens_per_passage)  # [B, T] each
    n_tokens = int(mask[:, 1:].sum())
    training, frames = model.training, []
    model.eval()
    try:
        with eager_attention(model), torch.enable_grad(), progress_bar(
                total=len(chosen) * n_units * probes, desc=f"hessian_coupling {lm.name}", unit="probes",
                enabled=progress) as bar:
            for layer, unit in units.items():
                with only_block_requires_grad(model, unit.params):
                    H = BlockHessian(unit.params, mean_nll(model, ids, mask))
                    S = probe_norms(H, unit.owner.to(lm.device), n_units, probes,
                                    torch.Generator().manual_seed(layer), bar.update)
                    del H
                frames.append(probe_rows(layer, S, unit.n_params(), unit.heads_per_unit, n_tokens))
    finally:
        model.train(training)
    return {"hessian_coupling_probes": pd.concat(frames, ignore_index=True)}
