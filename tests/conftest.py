"""Shared fixtures: tiny random models (fast), the shared corpus beside the repo (real text), stores on
SQLite and (when ``ATLAS_TEST_POSTGRES_URL`` names a server, as ``.ci/run`` does) PostgreSQL; and the rules
every test runs under:

* **no network**: a socket may connect to loopback addresses only (a local PostgreSQL, xdist's workers);
  any other address, and resolving any host name but localhost, raises ``NetworkBlocked`` and fails the
  test that tried, even if the code under test swallowed the error. The Hugging Face hub and
  great-expectations' analytics are switched off before either is imported (``HF_HUB_OFFLINE=1``,
  ``GX_ANALYTICS_ENABLED=false``); subprocesses inherit the switches.
* **hypothesis is derandomised, always** (profile ``atlas``): every run of the test command tries the same
  examples, with no example database, so a failure reproduces and a pass is never luck.
  ``ATLAS_HYPOTHESIS_PROFILE=explore`` searches new examples (random, with the example database) when
  hunting for bugs by hand.
"""

import ipaddress
import os
import socket
import copy
import uuid
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
# The atlas plugin (a pytest11 entry point) loads before this file and may have imported huggingface_hub,
# which reads HF_HUB_OFFLINE once, at import: switch its flag too (.ci/run also sets the variables first).
import huggingface_hub.constants  # noqa: E402

huggingface_hub.constants.HF_HUB_OFFLINE = True

import great_expectations  # noqa: E402, F401
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers.models.gpt2.modeling_gpt2  # noqa: E402, F401
import transformers.models.gpt_neox.modeling_gpt_neox  # noqa: E402, F401
import transformers.models.llama.modeling_llama  # noqa: E402, F401
import transformers.models.opt.modeling_opt  # noqa: E402, F401
from hypothesis import settings  # noqa: E402

import importlib  # noqa: E402
import pkgutil  # noqa: E402

import atlas  # noqa: E402
from atlas import STARTER_CORPUS, Store, load_corpus, load_model  # noqa: E402
from atlas._anatomy import decoder_layers  # noqa: E402

# pytester's in-process runs drop the modules first imported during a run. Lazily imported modules that
# keep global state (great-expectations' active context, the torch operators transformers' model code
# registers, which cannot be registered twice) are therefore imported here, once; so is every module of atlas,
# so that a lazy export such as atlas.judge comes from the module the rest of the session sees, not from one a
# run imported and pytester dropped.
for _module in pkgutil.walk_packages(atlas.__path__, "atlas."):
    importlib.import_module(_module.name)
pytest_plugins = ["pytester"]

# Examples run models and write stores: their time depends on the machine's load, not on correctness.
settings.register_profile("atlas", deadline=None, derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("ATLAS_HYPOTHESIS_PROFILE", "atlas"))


class NetworkBlocked(RuntimeError):
    """A test tried to reach a non-loopback address (deliberately not an OSError: nothing may treat it as an
    ordinary unreachable host and carry on)."""


_ATTEMPTS: list[str] = []
_LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _block_network() -> None:
    """Loopback only, for every socket this process opens (see the module docstring)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _ATTEMPTS.append(f"connect {address!r}")
            raise NetworkBlocked(f"tests may not use the network: connect to {address!r} refused")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            _ATTEMPTS.append(f"resolve {host!r}")
            raise NetworkBlocked(f"tests may not use the network: resolving {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo


_block_network()


@pytest.fixture
def network_attempts() -> list[str]:
    """The blocked attempts so far (a test of the block itself clears its own)."""
    return _ATTEMPTS


@pytest.fixture(autouse=True)
def no_network_attempt():
    """Fails the test that tried to reach the network, even when the code under test caught the error."""
    before = len(_ATTEMPTS)
    yield
    tried = _ATTEMPTS[before:]
    del _ATTEMPTS[before:]
    assert not tried, f"the test tried to use the network: {tried}"


POSTGRES_URL = os.environ.get("ATLAS_TEST_POSTGRES_URL", "")
NO_POSTGRES = "ATLAS_TEST_POSTGRES_URL is not set: no PostgreSQL server for this run (.ci/run starts one)"


@pytest.fixture
def new_postgres_url():
    """A factory of URLs of new, empty PostgreSQL databases on the test server, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    from sqlalchemy import create_engine, make_url, text

    server = make_url(POSTGRES_URL)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    made = []

    def make() -> str:
        made.append(f"atlas_test_{uuid.uuid4().hex[:16]}")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{made[-1]}"'))
        return server.set(database=made[-1]).render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url(new_postgres_url):
    """The URL of a new, empty PostgreSQL database on the test server (skipped without one)."""
    return new_postgres_url()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_store_url(request, tmp_path):
    """A factory of URLs of new stores: SQLite files, then PostgreSQL databases (skipped without a server)."""
    if request.param == "postgresql":
        return request.getfixturevalue("new_postgres_url")
    count = iter(range(10**6))
    return lambda: f"sqlite:///{tmp_path / f'atlas-{next(count)}.db'}"


@pytest.fixture
def store_url(new_store_url):
    """The URL of a new store on each backend in turn (see ``new_store_url``)."""
    return new_store_url()


@pytest.fixture
def any_store(store_url):
    """A new store on each backend in turn (see ``store_url``)."""
    store = Store(store_url)
    yield store
    store.engine.dispose()

SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "domains-v1.jsonl"


@pytest.fixture(scope="session", params=["tiny-gpt2", "tiny-opt", "tiny-llama"])
def tiny(request):
    """Each tiny layout in turn: GPT-2, OPT, Llama with grouped-query attention."""
    return load_model(request.param, device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2():
    return load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session")
def starter():
    return load_corpus("starter")


@pytest.fixture(scope="session")
def shared_corpus():
    if not SHARED_CORPUS.is_file():
        pytest.skip(f"the shared corpus is not beside the repo ({SHARED_CORPUS})")
    return load_corpus(SHARED_CORPUS)


@pytest.fixture
def store():
    return Store("sqlite://")


@pytest.fixture(scope="session")
def smollm2():
    """The real offline model; the first load converts its GGUF (~25 s), later loads take seconds."""
    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="session")
def instrument_tables():
    """Small schema-shaped tables of every instrument with a figure, with known shapes: 3 layers x 4 heads
    of ablation (ΔPPL changes sign), two attention blocks of Hessian eigenvalues and SLQ density (weights
    summing to 1 per block), three domains of gradient, and an interpolation with a barrier at t = 0.5; and the
    Lab's and the weight-space geometry instruments' (``lab_tables``)."""
    import pandas as pd

    ablation = pd.DataFrame([{"layer": layer, "head": head, "delta_ppl": 0.5 * layer - 0.3 * head,
                              "ppl": 50.0 + 0.5 * layer - 0.3 * head, "baseline_ppl": 50.0,
                              "importance": 0.1 * (head + 1), "n_tokens": 256}
                             for layer in range(3) for head in range(4)])
    ablation_layers = pd.DataFrame({"layer": [0, 1, 2], "n_heads": [4] * 3, "mean_delta_ppl": [-0.45, 0.05, 0.55],
                                    "ci_low": [-0.8, -0.3, 0.2], "ci_high": [-0.1, 0.4, 0.9],
                                    "mean_importance": [0.25] * 3})
    hessian = pd.DataFrame(
        [{"block": f"layer.{i}.attention", "kind": "eigenvalue", "index": k, "value": v * (i + 1), "weight": None,
          "stderr": None, "backend": "atlas", "n_hvp": 16, "converged": k != 1, "n_params": 3072, "n_tokens": 64}
         for i in range(2) for k, v in ((0, 12.0), (1, 3.0), (-1, -0.02), (-2, -0.005))]
        + [{"block": f"layer.{i}.attention", "kind": "density", "index": j, "value": v, "weight": w, "stderr": None,
            "backend": "atlas", "n_hvp": 16, "converged": True, "n_params": 3072, "n_tokens": 64}
           for i in range(2) for j, (v, w) in enumerate(((-0.02, 0.1), (0.0001, 0.6), (0.5, 0.2), (12.0, 0.1)))]
        + [{"block": f"layer.{i}.attention", "kind": "trace", "index": 0, "value": 20.0, "weight": None,
            "stderr": 1.0, "backend": "atlas", "n_hvp": 20, "converged": True, "n_params": 3072, "n_tokens": 64}
           for i in range(2)])
    gradient = pd.DataFrame({"domain": ["poetry", "spanish", "academic_abstract"], "loss": [3.0, 3.5, 4.0],
                             "grad_norm": [1.5, 2.0, 2.5], "entropy": [2.0, 2.5, 3.0], "max_prob": [0.4, 0.3, 0.2],
                             "n_tokens": [500, 480, 510], "n_passages": [2, 2, 3]})
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    loss = [3.0, 3.6, 4.2, 3.5, 3.2]
    linear = [3.0 + 0.2 * t for t in ts]
    interpolation = pd.DataFrame({"t": ts, "loss": loss, "linear": linear,
                                  "excess": [a - b for a, b in zip(loss, linear, strict=True)], "n_tokens": [900] * 5})
    barrier = pd.DataFrame({"definition": ["max_minus_mean_endpoints", "max_minus_linear"],
                            "barrier": [4.2 - 3.1, 4.2 - 3.1], "t_at_max": [0.5, 0.5]})
    return {"ablation": ablation, "ablation_layers": ablation_layers, "hessian": hessian, "gradient": gradient,
            "interpolation": interpolation, "interpolation_barrier": barrier, **lab_tables(), **_curvature_tables()}


def lab_tables() -> dict:
    """Schema-shaped tables of phase_transitions, algorithmic_branches, memory and symmetry_orbits, with known
    shapes: a run of 11 checkpoints (steps 0, 100, ..., 1000) whose held-out accuracy jumps between steps 600 and
    700 (the summary is ``order_transitions``' own), five comparisons x two layers of CKA with three chunks each
    (between seeds lowest), two curricula x two seeds of memory endpoints over two domains with their six pairs,
    and two draws of each permutation family with a barrier that matching lowers."""
    import pandas as pd

    from atlas.instruments import order_transitions

    held_loss = [4.6, 5.0, 6.0, 6.5, 6.8, 6.6, 5.5, 0.5, 0.1, 0.03, 0.02]
    train_loss = [4.6, 1.0, 0.05, 0.02, 0.015, 0.012, 0.01, 0.008, 0.006, 0.005, 0.004]
    phase = pd.DataFrame({"step": list(range(0, 1001, 100)), "train_loss": train_loss, "heldout_loss": held_loss,
                          "train_acc": [0.0, 0.6] + [1.0] * 9,
                          "heldout_acc": [0.0, 0.02, 0.04, 0.04, 0.02, 0.04, 0.06, 0.9, 0.98, 1.0, 1.0],
                          "generalisation_gap": [h - t for h, t in zip(held_loss, train_loss, strict=True)],
                          "weight_norm": [30.0, 31, 31, 30, 29, 28, 26, 20, 18, 17, 17],
                          "fourier_sparsity": [0.1, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 0.9, 0.95, 0.96, 0.96],
                          "heldout_acc_resolution": [0.02] * 11})
    level = {"between_seeds": 0.3, "within_model": 0.97, "within_other": 0.95, "peak_model": 0.5, "peak_other": 0.55}
    steps = {"between_seeds": (800, 900), "within_model": (800, 700), "within_other": (900, 800),
             "peak_model": (800, 400), "peak_other": (900, 300)}
    branches = pd.DataFrame([{"comparison": c, "layer": layer, "step_a": steps[c][0], "step_b": steps[c][1],
                              "loss_a": 0.1, "loss_b": 0.12, "target_loss": 0.1, "cka": v - 0.05 * layer,
                              "p_value": 0.005, "n": 96} for c, v in level.items() for layer in range(2)])
    branch_chunks = pd.DataFrame([{"comparison": c, "layer": layer, "chunk": k, "n": 32,
                                   "cka": v - 0.05 * layer + 0.03 * (k - 1)}
                                  for c, v in level.items() for layer in range(2) for k in range(3)])
    curricula = ["technical_documentation>poetry", "poetry>technical_documentation"]
    memory = pd.DataFrame([{"curriculum": c, "seed": s, "step": 10 + s, "heldout_loss": 4.5 + 0.01 * s,
                            "target": 4.5, "gap": 0.01 * s, "matched": s == 0, "lambda_max": 5.0 + i + s,
                            "lambda_min": -0.2 * (s + 1), "lambda_max_converged": True, "lambda_min_converged": s == 0,
                            "trace": 100.0 + 10 * i, "trace_stderr": 3.0, "n_hvp": 40, "n_params": 10704,
                            "n_tokens": 1658, "train_wall_s": 1.5} for i, c in enumerate(curricula) for s in range(2)])
    memory_domains = pd.DataFrame([{"curriculum": c, "seed": s, "domain": d, "loss": 4.4 + 0.2 * j + 0.1 * i,
                                    "n_tokens": 829} for i, c in enumerate(curricula) for s in range(2)
                                   for j, d in enumerate(["poetry", "technical_documentation"])])
    ends = [(c, s) for c in curricula for s in range(2)]
    memory_pairs = pd.DataFrame([{"curriculum_a": a[0], "seed_a": a[1], "curriculum_b": b[0], "seed_b": b[1],
                                  "same_curriculum": a[0] == b[0], "parameter_distance": 20.0 + 5 * (a[1] != b[1]),
                                  "cka": 0.9 if a[1] == b[1] else (0.6 if a[0] == b[0] else 0.2),
                                  "profile_distance": 0.1, "log_lambda_gap": 0.2, "log_trace_gap": None}
                                 for i, a in enumerate(ends) for b in ends[i + 1:]])
    families = ["mlp", "heads", "residual", "all"]
    orbits = pd.DataFrame([{"draw": d, "family": f, "max_abs_dlogit": 1e-6 * (k + 1) * (d + 1),
                            "parameter_distance": 2.0 * (k + 1) + 0.1 * d, "weight_norm": 10.0}
                           for d in range(2) for k, f in enumerate(families)])
    definitions = ["max_minus_mean_endpoints", "max_minus_linear"]
    barrier = {"before": 1.2, "after": 0.3}
    matching = pd.DataFrame([{"alignment": a, "definition": d, "barrier": b - 0.1 * j, "t_at_max": 0.5,
                              "parameter_distance": 12.0 if a == "before" else 7.0, "loss_model": 0.02,
                              "loss_other": 0.03, "max_abs_dlogit_other": 0.0 if a == "before" else 1e-6,
                              "n_pairs": 400} for a, b in barrier.items() for j, d in enumerate(definitions)])
    matching_chunks = pd.DataFrame([{"alignment": a, "definition": d, "chunk": k, "barrier": b - 0.1 * j + 0.05 * k,
                                     "n_pairs": 200} for a, b in barrier.items() for j, d in enumerate(definitions)
                                    for k in range(2)])
    return {"phase_transitions": phase, "phase_transitions_summary": order_transitions(phase),
            "algorithmic_branches": branches, "algorithmic_branches_chunks": branch_chunks, "memory": memory,
            "memory_domains": memory_domains, "memory_pairs": memory_pairs, "symmetry_orbits": orbits,
            "symmetry_matching": matching, "symmetry_matching_chunks": matching_chunks}


def _curvature_tables() -> dict:
    """Schema-shaped tables of the curvature and multi-task geometry instruments (their figures are
    atlas/_figures/_curvature.py): two domains of smoothness over blocks model, layer.0 and layer.1 (poetry's
    B_simple undefined), three domains of tightness over four blocks (layer.10 after layer.1; one conflicting
    pair), two tuned domains of elasticity (spanish forgot nothing), stiffness at radii 0, 0.1 and 0.2 over two
    directions, and the Hessian coupling of 4 heads in each of 2 layers."""
    import pandas as pd

    blocks = ["model", "layer.0", "layer.1"]
    smoothness = pd.DataFrame([
        {"domain": d, "block": b, "n_passages": 3, "grad_sq_norm": 2.0, "signal": s, "noise": 2.0 - s,
         "b_simple": None if s <= 0 else (2.0 - s) / s, "b_simple_ci_low": None if s <= 0 else (2.0 - s) / s / 2,
         "b_simple_ci_high": None if s <= 0.5 else (2.0 - s) / s * 2, "mean_cosine": c, "cosine_ci_low": c - 0.1,
         "cosine_ci_high": c + 0.1}
        for d, base in (("spanish", 0.6), ("poetry", -0.2)) for k, b in enumerate(blocks)
        for s, c in [(0.8 - 0.2 * k if base > 0 else -0.1, base - 0.1 * k)]])
    gram = pd.DataFrame([{"domain": d, "block": "model", "passage_a": f"{d}-{a}", "passage_b": f"{d}-{b}",
                          "dot": 2.0 if a == b else sign * 0.5 * (a + b)}
                         for d, sign in (("spanish", 1.0), ("poetry", -1.0)) for a in range(3) for b in range(a, 3)])
    domains = ["poetry", "spanish", "academic_abstract"]
    tight_blocks = ["layer.10", "model", "layer.1", "layer.0"]
    tightness = pd.DataFrame({"block": tight_blocks, "n_domains": [3] * 4, "mean_cosine": [0.4, 0.3, 0.5, 0.6],
                              "min_cosine": [-0.2, 0.1, 0.2, 0.3], "conflict_share": [1 / 3, 0.0, 0.0, 0.0],
                              "mgda_norm_ratio": [0.2, 0.7, None, 0.9]})
    mgda = pd.DataFrame([{"block": b, "domain": d, "weight": w} for b in tight_blocks
                         for d, w in zip(domains, (0.5, 0.5, 0.0), strict=True)])
    pairs = pd.DataFrame([{"block": b, "domain_a": domains[i], "domain_b": domains[j],
                           "dot": 1.0 if i == j else cos, "cosine": 1.0 if i == j else cos}
                          for b in tight_blocks for i in range(3) for j in range(i, 3)
                          for cos in [-0.2 if (i, j) == (0, 2) else 0.5]])
    elasticity = pd.DataFrame([{"tuned_domain": t, "domain": d, "penalty": p, "loss_before": 3.0,
                                "loss_after": 3.0 + ch, "change": ch, "n_tokens": 64}
                               for t in ("poetry", "spanish") for d in domains for p in ("none", "ewc")
                               for ch in [(-0.3 if d == t else (0.4 if t == "poetry" else -0.1))
                                          * (1 if p == "none" else 0.5)]])
    share = pd.DataFrame({"tuned_domain": ["poetry", "spanish"], "n_domains": [2, 2], "forgetting": [0.4, -0.1],
                          "forgetting_ewc": [0.2, -0.05], "elastic_share": [0.5, None], "ci_low": [0.3, None],
                          "ci_high": [0.7, None], "gain": [0.3, 0.3], "gain_ewc": [0.15, 0.15]})
    stiffness = pd.DataFrame([
        {"direction": k, "radius": r, "loss_start": 3.0, "loss_perturbed": 3.0 + rise,
         "loss_recovered": 2.9 + rise * (1 - rec) if rise > 0 else 2.9 + rise, "loss_control": 2.9, "rise": rise,
         "recovered": rec if rise > 0 else None, "recovered_undefined": None if rise > 0 else "no push (radius 0)",
         "distance_perturbed": 10 * r, "distance_after": 10 * r, "returned": None if r == 0 else 1e-6,
         "distance_to_start": 10 * r + 0.1, "n_tokens": 256}
        for k in range(2) for r in (0.0, 0.1, 0.2) for rise, rec in [(5 * r * r * (1 + k), 0.5 + 0.1 * k)]])
    radii = pd.DataFrame({"radius": [0.0, 0.1, 0.2], "n_directions": [2] * 3, "rise": [0.0, 0.075, 0.3],
                          "recovered": [None, 0.55, 0.55], "recovered_ci_low": [None, 0.5, 0.5],
                          "recovered_ci_high": [None, 0.6, 0.6], "returned": [None, 1e-6, 1e-6],
                          "returned_ci_low": [None, 1e-6, 1e-6], "returned_ci_high": [None, 1e-6, 1e-6]})
    coupling = pd.DataFrame([{"layer": layer, "unit_a": a, "unit_b": b, "coupling": 0.02 * (1 + layer) * (a + b),
                              "stderr": 0.005, "n_probes": 4, "frobenius_ab": 0.1, "frobenius_aa": 1.0,
                              "frobenius_bb": 1.0, "heads_per_unit": 1, "n_tokens": 64}
                             for layer in range(2) for a in range(4) for b in range(a + 1, 4)])
    coupling_layers = pd.DataFrame({"layer": [0, 1], "coupling": [0.06, 0.12], "stderr": [0.01, 0.02],
                                    "ci_low": [0.04, 0.08], "ci_high": [0.09, 0.18], "n_pairs": [6, 6],
                                    "n_probes": [4, 4], "heads_per_unit": [1, 1], "n_tokens": [64, 64]})
    return {"smoothness": smoothness, "smoothness_gram": gram, "tightness": tightness, "tightness_mgda": mgda,
            "tightness_pairs": pairs, "elasticity": elasticity, "elasticity_share": share, "stiffness": stiffness,
            "stiffness_radii": radii, "hessian_coupling": coupling, "hessian_coupling_layers": coupling_layers}


def _naive_gradients(lm, passages, max_tokens: int) -> list[dict[str, np.ndarray]]:
    """Per passage, {block: flattened gradient} in float64, by ``model(labels=ids).loss.backward()`` on a copy
    (HF's loss: the mean NLL over every token after the first, the passage's mean NLL per scored token)."""
    model = copy.deepcopy(lm.model)
    out = []
    for p in passages:
        ids = torch.tensor([([lm.doc_start_id] + lm.tokenizer(p.text, add_special_tokens=False).input_ids)
                            [: max_tokens + 1]])
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        blocks = {"model": torch.cat([q.grad.reshape(-1) for q in model.parameters()])}
        for i, layer in enumerate(decoder_layers(model)):
            blocks[f"layer.{i}"] = torch.cat([q.grad.reshape(-1) for q in layer.parameters()])
        out.append({k: v.double().numpy() for k, v in blocks.items()})
    return out


@pytest.fixture(scope="session")
def naive_gradients():
    """Per-passage gradients computed independently of atlas.instruments._pergrad, one backward per passage."""
    return _naive_gradients


@pytest.fixture
def prediction_project(pytester):
    """``make(module, per_domain, *options)``: a pytester project holding one prediction module and a corpus of
    the starter corpus's first ``per_domain`` passages of each domain; it returns (pytester, store URL, the
    pytest options that use them, ``options`` first)."""
    return lambda module, per_domain, *options: _prediction_project(pytester, module, per_domain, *options)


def _prediction_project(pytester, module: str, per_domain: int, *options: str):
    pytester.makepyfile(test_predictions=module)
    corpus = pytester.path / "corpus.jsonl"
    corpus.write_text("".join(line for i, line in enumerate(STARTER_CORPUS.read_text().splitlines(True))
                              if i % 12 < per_domain), encoding="utf-8")
    db = f"sqlite:///{pytester.path / 'atlas.db'}"
    return pytester, db, [*options, f"--atlas-corpus={corpus}", f"--atlas-db={db}", "-p", "no:cacheprovider", "-rs"]


# --- the reliability suite's figures (tests/reliability/_support.record) ---------------------------------------

_FIGURES = Path(__file__).resolve().parents[1] / "reports" / "reliability-figures.jsonl"


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist) starts afresh
        _FIGURES.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter):
    """The figures of the reliability table, summed over the tests that ran: printed, and written beside them as
    ``reports/reliability-figures.json`` (with the tests' outcome counts), which the documentation's table is
    rendered from once copied to ``docs/reliability-figures.json``."""
    import json

    if not _FIGURES.is_file():
        return
    totals: dict[str, int] = {}
    for line in _FIGURES.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        totals[entry["figure"]] = totals.get(entry["figure"], 0) + entry["value"]
    terminalreporter.write_sep("-", "reliability figures")
    for figure, value in sorted(totals.items()):
        terminalreporter.write_line(f"{value:>8}  {figure}")
    outcomes = {kind: len(terminalreporter.stats.get(kind, ())) for kind in ("passed", "failed", "skipped", "error")}
    _FIGURES.with_suffix(".json").write_text(json.dumps({"tests": outcomes, "figures": dict(sorted(totals.items()))},
                                                        indent=1) + "\n", encoding="utf-8")
