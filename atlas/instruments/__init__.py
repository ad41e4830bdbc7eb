"""What Atlas can measure: each instrument is one module with one entry function, declared where it is
defined with ``@instrument(...)``. Importing this package registers them all, in the order below, in
``INSTRUMENTS`` (name -> ``Instrument``); ``atlas.run_instrument`` is the only caller of an entry function
(isolation, validation, storage and reuse).

Beside the registry: each instrument's entry function and summaries (``measure_perplexity``,
``domain_perplexity`` ...), and the matrix-free spectral estimates the curvature instruments share --
``lanczos`` (Ritz pairs, ``Ritz``, of an operator known through ``v -> Hv``), ``hutchinson`` (its trace)
and ``rademacher`` (their probes).
"""

from . import perplexity, coupling, ablation, hessian, hessian_coupling, gradient, interpolation, smoothness, tightness, stiffness, elasticity, phase_transitions, symmetry_orbits, algorithmic_branches, memory  # noqa: F401, I001  (registers, in order)
from ._lanczos import Ritz, hutchinson, lanczos, rademacher
from ._registry import INSTRUMENTS, Instrument, instrument
from .ablation import layer_ablation, measure_ablation
from .algorithmic_branches import matched_checkpoints, measure_algorithmic_branches
from .coupling import layer_coupling, measure_coupling
from .elasticity import domain_elasticity, measure_elasticity
from .gradient import measure_gradient
from .hessian import measure_hessian
from .hessian_coupling import layer_hessian_coupling, measure_hessian_coupling, pair_coupling
from .interpolation import interpolation_barrier, measure_interpolation
from .memory import measure_memory
from .phase_transitions import measure_phase_transitions, order_transitions
from .perplexity import domain_perplexity, measure_perplexity
from .symmetry_orbits import measure_symmetry_orbits
from .smoothness import domain_smoothness, measure_smoothness
from .stiffness import measure_stiffness, radius_stiffness
from .tightness import block_mgda, block_tightness, measure_tightness

__all__ = ["INSTRUMENTS", "Instrument", "Ritz", "hutchinson", "instrument", "lanczos", "rademacher",
           "domain_perplexity", "interpolation_barrier", "layer_ablation",
           "layer_coupling", "layer_hessian_coupling", "measure_ablation", "measure_coupling", "measure_gradient",
           "measure_hessian", "measure_hessian_coupling", "measure_interpolation", "measure_perplexity",
           "pair_coupling", "domain_smoothness", "measure_smoothness", "block_mgda", "block_tightness",
           "measure_tightness", "measure_stiffness", "radius_stiffness", "domain_elasticity", "measure_elasticity",
           "measure_memory",
           "measure_phase_transitions", "order_transitions", "measure_symmetry_orbits",
           "matched_checkpoints", "measure_algorithmic_branches"]
