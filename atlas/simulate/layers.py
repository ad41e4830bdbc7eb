"""Layer profiles over passages: the per-passage layer tables of one model, drawn from latent layer profiles.

A real model's layer profile is smooth (neighbouring layers share most of their input) and every passage shares
it: one model is one draw of it. So a world here draws, per instrument, one **shared** latent profile over the
layers -- stationary AR(1) (phi 0.8, unit variance), a random walk (steps 1/sqrt(L): unit variance at the top
layer), or none -- and adds each passage's own **noise** (AR(1), a random walk, or white, unit scale). The claimed
relations are mixed in at a correlation: the coupling profile is ``rise * depth + sqrt(1 - rise^2) * shared``
(depth: the layer index standardised), each other instrument's ``link * coupling + sqrt(1 - link^2) * shared``,
so rise and link are about the Pearson correlation of the latent profiles over layers, and Spearman's rho about
(6 / pi) asin(r / 2) of it (0.48 at r = 0.5). A null is rise = link = 0.

The latent profile z (per passage and layer) becomes each instrument's quantity on its own scale:
``coupling_passages`` (both variant families) tanh(0.4 + 0.15 z) (plus 0.2 for seed_flattened);
``ablation_passages`` a head's ablation adding 0.01 + 0.005 z (+ head noise 0.002) nats per token to a baseline
of about 3, so delta-PPL is about 0.2 + 0.1 z; ``hessian_coupling_layers`` (one batch, no passages) 0.2 exp(0.3 z)
with a 10% probe error; ``hessian`` (one batch) the top eigenvalue of each attention block, 50 exp(0.5 z) with a
5% Lanczos error, converged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["PHI", "LayerWorld", "latent", "nulls", "within_model_nulls"]

PHI = 0.8
PROFILES = ("ar1", "walk", "white", "none")
VARIANTS = {"row_centred": 0.4, "seed_flattened": 0.6}  # the families the predictions read, and their offsets
INSTRUMENTS = ("coupling", "ablation", "hessian_coupling", "hessian")
HEADS, TOKENS, BASE_NLL = 4, 96, 3.0


def latent(rng: np.random.Generator, kind: str, rows: int, layers: int, phi: float = PHI) -> np.ndarray:
    """``rows`` profiles over ``layers`` [rows, layers]: stationary AR(1) ``phi`` with unit variance ("ar1"), a
    random walk reaching unit variance at the top layer ("walk"), white noise ("white"), or zeros ("none")."""
    if kind not in PROFILES:
        raise ValueError(f"a latent profile is one of {PROFILES}, not {kind!r}")
    if kind == "none":
        return np.zeros((rows, layers))
    if kind == "white":
        return rng.normal(size=(rows, layers))
    steps = rng.normal(size=(rows, layers))
    if kind == "walk":
        return np.cumsum(steps, axis=1) / np.sqrt(layers)
    out = np.empty_like(steps)
    out[:, 0] = steps[:, 0]
    for layer in range(1, layers):
        out[:, layer] = phi * out[:, layer - 1] + np.sqrt(1 - phi**2) * steps[:, layer]
    return out


@dataclass(frozen=True)
class LayerWorld:
    """A simulator for ``atlas calibrate``: one model's tables of ``instruments`` over ``layers`` and ``passages``.

    ``shared``: the model's own profile (per instrument, independent), ``noise``: each passage's deviation from it
    (both one of "ar1", "walk", "white", "none"; noise "none" also drops the heads' and the Hessian estimates'
    errors: the tables are then exact functions of the profiles); ``rise``: the coupling profile's correlation
    with depth; ``link``: every other instrument's correlation with the coupling profile."""

    name: str
    instruments: tuple[str, ...]
    shared: str = "ar1"
    noise: str = "ar1"
    rise: float = 0.0
    link: float = 0.0
    layers: int = 30
    passages: int = 24

    def __post_init__(self):
        if unknown := set(self.instruments) - set(INSTRUMENTS):
            raise ValueError(f"no simulator for instruments {sorted(unknown)}; known: {INSTRUMENTS}")
        if not (abs(self.rise) <= 1 and abs(self.link) <= 1):
            raise ValueError("rise and link are correlations, within [-1, 1]")

    def __call__(self, rng: np.random.Generator) -> dict:
        depth = np.arange(self.layers) - (self.layers - 1) / 2
        depth = depth / depth.std()
        coupling = self.rise * depth + np.sqrt(1 - self.rise**2) * self._shared(rng)
        tables = {}
        for instrument in self.instruments:
            profile = coupling if instrument == "coupling" else (
                self.link * coupling + np.sqrt(1 - self.link**2) * self._shared(rng))
            tables[instrument] = getattr(self, f"_{instrument}")(rng, profile)
        return tables

    def _shared(self, rng) -> np.ndarray:
        return latent(rng, self.shared, 1, self.layers)[0]

    def _per_passage(self, rng, profile: np.ndarray) -> np.ndarray:
        return profile + latent(rng, self.noise, self.passages, self.layers)  # [passages, layers]

    def _error(self, rng, scale: float, size) -> np.ndarray:
        return scale * rng.normal(size=size) * (self.noise != "none")

    def _ids(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array([f"p{i:03d}" for i in range(self.passages)])
        return ids, np.array([f"d{i % 4}" for i in range(self.passages)])

    def _coupling(self, rng, profile) -> dict:
        z, (ids, domains) = self._per_passage(rng, profile), self._ids()
        cells = len(ids) * self.layers
        frames = [pd.DataFrame({
            "passage_id": np.repeat(ids, self.layers), "domain": np.repeat(domains, self.layers),
            "layer": np.tile(np.arange(self.layers), len(ids)), "variant": variant,
            "coupling": np.tanh(offset + 0.15 * z).ravel(), "n_pairs": np.full(cells, HEADS * (HEADS - 1) // 2),
            "n_tokens": np.full(cells, TOKENS + 1)}) for variant, offset in VARIANTS.items()]
        return {"coupling_passages": pd.concat(frames, ignore_index=True)}

    def _ablation(self, rng, profile) -> dict:
        z, (ids, domains) = self._per_passage(rng, profile), self._ids()
        base = TOKENS * (BASE_NLL + self._error(rng, 0.1, len(ids)))  # [passages]
        added = 0.01 + 0.005 * z[..., None] + self._error(rng, 0.002, (len(ids), self.layers, HEADS))
        shape = (len(ids), self.layers, HEADS)
        return {"ablation_passages": pd.DataFrame({
            "passage_id": np.broadcast_to(ids[:, None, None], shape).ravel(),
            "domain": np.broadcast_to(domains[:, None, None], shape).ravel(),
            "layer": np.broadcast_to(np.arange(self.layers)[None, :, None], shape).ravel(),
            "head": np.broadcast_to(np.arange(HEADS), shape).ravel(),
            "nll_sum": (base[:, None, None] + TOKENS * added).ravel(),
            "baseline_nll_sum": np.broadcast_to(base[:, None, None], shape).ravel(),
            "n_tokens": np.full(added.size, TOKENS)})}

    def _hessian_coupling(self, rng, profile) -> dict:
        coupling = 0.2 * np.exp(0.3 * profile + self._error(rng, 0.1, self.layers))
        stderr = 0.1 * coupling
        return {"hessian_coupling_layers": pd.DataFrame({
            "layer": np.arange(self.layers), "coupling": coupling, "stderr": stderr,
            "ci_low": coupling * np.exp(-1.96 * 0.1), "ci_high": coupling * np.exp(1.96 * 0.1),
            "n_pairs": HEADS * (HEADS - 1) // 2, "n_probes": 8, "heads_per_unit": 1, "n_tokens": 4 * TOKENS})}

    def _hessian(self, rng, profile) -> dict:
        return {"hessian": pd.DataFrame({
            "block": [f"layer.{layer}.attention" for layer in range(self.layers)], "kind": "eigenvalue",
            "index": 0, "value": 50 * np.exp(0.5 * profile + self._error(rng, 0.05, self.layers)),
            "weight": np.nan, "stderr": np.nan, "backend": "atlas", "n_hvp": 40, "converged": True,
            "n_params": 4 * 64 * 64, "n_tokens": 4 * TOKENS})}


def nulls(instruments: tuple[str, ...], layers: int = 30) -> dict[str, LayerWorld]:
    """The worlds a claim about layers in general must not call supported: no relation, with every passage
    sharing one smooth profile per instrument (AR(1) phi 0.8, or a random walk), or with no shared profile at
    all (white noise, independent between passages)."""
    return {world.name: world for world in (
        LayerWorld("shared AR(1) phi 0.8", instruments, shared="ar1", noise="ar1", layers=layers),
        LayerWorld("shared random walk", instruments, shared="walk", noise="ar1", layers=layers),
        LayerWorld("independent noise", instruments, shared="none", noise="white", layers=layers))}


def within_model_nulls(instruments: tuple[str, ...], layers: int = 30) -> dict[str, LayerWorld]:
    """The worlds a claim about one model's named layers must not call supported: its profile is flat, and each
    passage deviates from it smoothly (AR(1) phi 0.8, a random walk) or not (white noise)."""
    return {world.name: world for world in (
        LayerWorld(f"flat profile, passages deviating as {label}", instruments, shared="none", noise=noise,
                   layers=layers)
        for noise, label in (("ar1", "AR(1) phi 0.8"), ("walk", "a random walk"), ("white", "white noise")))}
