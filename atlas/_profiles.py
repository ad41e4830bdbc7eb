"""Run profiles: how much data and compute a prediction run spends.

``quick`` (the default) keeps ``pytest predictions/`` on the offline model under
ten minutes on a 2-core CPU; ``full`` is for GPUs and the nightly replication.
Every verdict records the sample sizes it actually used.

The **active** profile is the one whose numbers a prediction body's statistics use when it names none:
``atlas.stats`` and ``atlas.evidence`` take ``n_resamples=None`` as its ``bootstrap_resamples``. The
``prediction`` fixture makes the run's profile active for the body, ``atlas calibrate`` the calibration's
(with its ``--resamples``); outside both it is the default profile::

    >>> from atlas import PROFILES
    >>> from atlas import active_profile, using_profile
    >>> active_profile().name
    'quick'
    >>> with using_profile(PROFILES["full"]):
    ...     active_profile().bootstrap_resamples
    10000
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ._public import public

__all__ = ["DEFAULT_PROFILE", "PROFILES", "Profile", "active_profile", "resamples", "using_profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    passages_per_domain: int | None  # None: every passage of the corpus
    bootstrap_resamples: int
    #: per-instrument settings, e.g. {"ablation": {"max_tokens": 256}}
    settings: dict[str, dict] = field(default_factory=dict)
    #: per-instrument passages per domain, fewer than ``passages_per_domain`` for costly instruments
    per_domain: dict[str, int] = field(default_factory=dict)


PROFILES = {
    # token budgets of the costly instruments are spread over passages (tokens_per_passage): the passages are the
    # units every interval resamples, and 8 passages x 8 tokens reach every domain where one passage would not
    "quick": Profile("quick", passages_per_domain=24, bootstrap_resamples=2000,
                     settings={"ablation": {"max_tokens": 256, "tokens_per_passage": 32},
                               "hessian": {"max_tokens": 64, "tokens_per_passage": 8, "top_k": 1,
                                           "lanczos_steps": 16, "hutchinson_samples": 0, "slq_runs": 0},
                               # every layer (P6 correlates by layer); 2 probes, the fewest with a standard error
                               "hessian_coupling": {"probes": 2, "max_tokens": 64, "tokens_per_passage": 8},
                               # the gradient-statistics instruments: measured cost in their docstrings
                               "smoothness": {"max_tokens": 64},
                               "tightness": {"max_tokens": 64},
                               "stiffness": {"radii": "0.05,0.1", "directions": 2, "steps": 2, "max_tokens": 128},
                               "elasticity": {"fisher_passages": 2, "steps": 3, "lr": 0.003, "max_tokens": 128},
                               # 12 passages a domain, about half of them held out from the Lab tune (P11)
                               "interpolation": {"points": 5, "max_tokens": 1536, "tokens_per_passage": 16},
                               # 8 seeds a curriculum (16 memory-lm runs: ~160 CPU s cold), 20 products each
                               "memory": {"seeds": 8, "lanczos_steps": 12, "hutchinson_samples": 8},
                               # the global-geometry instruments on Lab runs: seconds on the modular-addition seeds
                               "phase_transitions": {"fourier_k": 5},
                               "symmetry_orbits": {"families": "all", "probe_pairs": 512, "points": 5, "chunks": 8},
                               "algorithmic_branches": {"probes": 512, "chunks": 8, "permutations": 199}},
                     per_domain={"coupling": 8, "smoothness": 8, "tightness": 8, "elasticity": 3, "interpolation": 12}),
    "full": Profile("full", passages_per_domain=None, bootstrap_resamples=10000,
                    settings={"ablation": {"max_tokens": 2048, "tokens_per_passage": 128},
                              "hessian": {"max_tokens": 256, "tokens_per_passage": 32, "top_k": 3,
                                          "lanczos_steps": 20, "hutchinson_samples": 20, "slq_runs": 1},
                              "hessian_coupling": {"probes": 8, "max_tokens": 256, "tokens_per_passage": 32},
                              "elasticity": {"tune_domains": "all", "fisher_passages": 8},
                              "interpolation": {"points": 11, "max_tokens": 16384, "tokens_per_passage": 128},
                              "memory": {"seeds": 8, "lanczos_steps": 30, "hutchinson_samples": 50},
                              "symmetry_orbits": {"permutations": 32, "points": 21, "chunks": 16},
                              "algorithmic_branches": {"probes": 2048, "chunks": 16, "permutations": 999}},
                    # smoothness holds a domain's per-passage gradients: 16 x 2 bytes per parameter
                    per_domain={"smoothness": 16}),
}

#: the profile a run gets when none is chosen (``--atlas-profile``, ``atlas calibrate --profile``: atlas._options);
#: its bootstrap resamples are the default of every interval and summary
DEFAULT_PROFILE = "quick"

_ACTIVE: ContextVar[Profile] = ContextVar("atlas_active_profile", default=PROFILES[DEFAULT_PROFILE])


def active_profile() -> Profile:
    """The profile of the prediction (or calibration) being judged; outside one, ``DEFAULT_PROFILE``."""
    return _ACTIVE.get()


@contextmanager
def using_profile(profile: Profile) -> Iterator[Profile]:
    """Make ``profile`` the active one inside the block."""
    token = _ACTIVE.set(profile)
    try:
        yield profile
    finally:
        _ACTIVE.reset(token)


def resamples(n_resamples: int | None) -> int:
    """``n_resamples`` as given, or the active profile's ``bootstrap_resamples`` for None."""
    return active_profile().bootstrap_resamples if n_resamples is None else n_resamples


public("atlas", Profile, active_profile, using_profile)
