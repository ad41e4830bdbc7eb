"""Training recipes as data: one short YAML file per recipe, validated on load.

A recipe says everything that decides a training run except its seed, in the
spirit of lm-evaluation-harness task files::

    kind: modular_addition            # modular_addition | corpus_lm | finetune
    architecture: {shape: gpt2, layers: 1, heads: 4, d_model: 64, d_mlp: 256, context: 3, init_std: 0.125}
    data: {p: 97, train_fraction: 0.3, split_seed: 0}
    optimiser: {lr: 1.0e-3, betas: [0.9, 0.98], weight_decay: 1.0}
    schedule: {kind: linear_warmup, warmup_steps: 10}
    steps: 3000
    batch: full                       # full batch, or sequences per step
    checkpoints: {log: 16, every: 100}
    seed: 0                           # the default seed; train(seed=...) overrides it

Kinds and their ``data``:

* ``modular_addition`` -- the grokking task of Power et al. (2022), in the form of
  Nanda et al. (2023): ``p``, ``train_fraction`` of the p² pairs, ``split_seed``;
* ``corpus_lm`` -- a small causal LM trained from scratch on a JSONL corpus with a
  byte-level tokenizer: ``corpus`` (a path or ``starter``), ``domains`` (default:
  all), ``train_fraction`` of each domain's passages (the rest held out, chosen by
  a hash of the passage id), ``split_seed``, ``window`` (tokens per training
  sequence) and ``curriculum`` (``shuffled``, or a domain order: the steps are cut
  into that many equal phases, phase i trains on the i-th domain only);
* ``finetune`` -- the same data, starting from an Atlas model ``init`` (its
  architecture and tokenizer; the recipe has no ``architecture``).

``architecture.shape`` is ``gpt2`` (learned positions, LayerNorm, GELU MLP, tied
embeddings) or ``llama`` (rotary positions, RMSNorm, SwiGLU MLP, grouped-query
attention with ``kv_heads``). ``init_std`` is the standard deviation of the
initial weights (transformers' ``initializer_range``; GPT-2 uses 0.02). Large
initial weights that weight decay must shrink are what delays generalisation in
grokking (Liu et al. 2023, Omnigrok), so the modular recipe sets it.

Checkpoints are saved at step 0 (``initial``, default true), at ``log``
log-spaced steps between 1 and ``steps``, at every multiple of ``every``, and at
the last step. ``Recipe.hash`` is the SHA-256 of the canonical resolved recipe
(defaults filled in, the corpus named by its content hash): it covers everything
that decides the weights and the checkpoints, and leaves out the name, the
description and the default seed, so every seed of one recipe shares its hash.

Bad input raises ``LabError`` (a ``ValueError``) naming the field and the fix;
YAML aliases are refused (no recipe needs them, and an alias bomb would expand to
gigabytes when the recipe is hashed).

Bounds. A recipe is refused in one line before anything is built when a size is absurd
for a trainer on a CPU: each size field has a ceiling (``LIMITS``), the model's parameter
count (``parameter_count``) at most ``MAX_PARAMETERS`` and the run's checkpoints at most
``MAX_CHECKPOINTS``; seeds (the run's and the split's) lie in ``0 .. MAX_SEED``, which
every random generator and every store takes. A recipe's name becomes a folder of the
Lab cache, so it is a plain file name (letters, digits, ``.``, ``_``, ``-``; no ``..``):
a bundled recipe is named exactly, and a recipe file is named by its stem.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from .._catalog import recipe_file, recipe_names
from .._errors import LabError
from .._jsonsafe import json_safe
from .._provenance import content_hash
from .._public import public
from .._yaml import load_yaml, problem_line

__all__ = ["LIMITS", "MAX_CHECKPOINTS", "MAX_PARAMETERS", "MAX_SEED", "Architecture", "Checkpoints", "CorpusData",
           "ModularData", "Optimiser", "Recipe", "Schedule", "check_seed", "load_recipe", "parameter_count",
           "recipe_names"]

KINDS = ("modular_addition", "corpus_lm", "finetune")
SHAPES = ("gpt2", "llama")
SCHEDULES = ("constant", "linear_warmup")

#: the largest seed of a run or a data split (numpy's and the stores' 32-bit range)
MAX_SEED = 2 ** 31 - 1
#: the ceiling of each size field (field path -> largest value); far above every bundled recipe
LIMITS = {"steps": 10_000_000, "batch": 65_536, "architecture.layers": 64, "architecture.heads": 256,
          "architecture.kv_heads": 256, "architecture.d_model": 16_384, "architecture.d_mlp": 65_536,
          "architecture.context": 65_536, "data.p": 1_000, "data.window": 65_536, "checkpoints.log": 10_000,
          "checkpoints.every": 10_000_000, "schedule.warmup_steps": 10_000_000}
#: the most parameters a recipe's fresh model may have (16 GB of weights and AdamW state in float32)
MAX_PARAMETERS = 1_000_000_000
#: the most checkpoints a run may write (each is a whole model on disk)
MAX_CHECKPOINTS = 5_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` when it is a whole number in ``0 .. MAX_SEED``; LabError naming ``what`` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        shown = repr(seed) if len(repr(seed)) <= 30 else repr(seed)[:27] + "..."
        raise LabError(f"{what} must be a whole number between 0 and {MAX_SEED}, not {shown}")
    return seed


@dataclass(frozen=True)
class Architecture:
    shape: str
    layers: int
    heads: int
    kv_heads: int  # = heads for gpt2 (no grouped-query attention)
    d_model: int
    d_mlp: int
    context: int  # positions the model can take (instruments score passages up to this length)
    init_std: float


@dataclass(frozen=True)
class ModularData:
    p: int
    train_fraction: float
    split_seed: int


@dataclass(frozen=True)
class CorpusData:
    corpus: str  # "starter" or an absolute path
    domains: tuple[str, ...] | None  # None: every domain of the corpus
    train_fraction: float
    split_seed: int
    window: int
    curriculum: str | tuple[str, ...]  # "shuffled" or a domain order
    init: str | None = None  # finetune: the Atlas model to start from


@dataclass(frozen=True)
class Optimiser:
    lr: float
    betas: tuple[float, float]
    weight_decay: float


@dataclass(frozen=True)
class Schedule:
    kind: str
    warmup_steps: int

    def factor(self, step: int) -> float:
        """The learning-rate multiplier for the update that produces step ``step`` (1-based)."""
        if self.kind == "linear_warmup" and self.warmup_steps:
            return min(1.0, step / self.warmup_steps)
        return 1.0


@dataclass(frozen=True)
class Checkpoints:
    log: int
    every: int
    initial: bool

    def steps(self, total: int) -> list[int]:
        """The checkpoint steps of a run of ``total`` steps, ascending."""
        chosen = {total}
        if self.initial:
            chosen.add(0)
        if self.log:
            chosen.update(int(s) for s in np.unique(np.round(np.geomspace(1, total, self.log))))
        if self.every:
            chosen.update(range(self.every, total + 1, self.every))
        return sorted(chosen)


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    description: str
    architecture: Architecture | None  # None for finetune: the init model's
    data: ModularData | CorpusData
    optimiser: Optimiser
    schedule: Schedule
    steps: int
    batch: int | None  # None: full batch
    checkpoints: Checkpoints
    seed: int

    @property
    def checkpoint_steps(self) -> list[int]:
        return self.checkpoints.steps(self.steps)

    def as_dict(self) -> dict:
        """The resolved recipe as plain data, unset fields left out (what ``Recipe.hash`` and the
        checkpoints' metadata hold); ``parse_recipe`` reads it back to an equal recipe."""
        out = _drop_none(asdict(self))
        out["batch"] = "full" if self.batch is None else self.batch
        return json_safe(out)  # tuples become lists, as they are read back

    @property
    def hash(self) -> str:
        resolved = {k: v for k, v in self.as_dict().items() if k not in ("name", "description", "seed")}
        if isinstance(self.data, CorpusData):
            from .._corpus import load_corpus

            resolved["data"]["corpus"] = load_corpus(self.data.corpus).hash
        return content_hash(resolved)

    def updated(self, changes: dict) -> Recipe:
        """A new recipe with ``changes`` merged in (nested mappings merge), validated like a file.

        >>> load_recipe("tiny-modular").updated({"steps": 5, "data": {"p": 7}}).data.p
        7
        """
        merged = _merge(self.as_dict(), changes)
        for key in ("name", "description"):
            merged.pop(key)
        return parse_recipe(merged, self.name, description=self.description)


# --- loading and validation ----------------------------------------------------------------

def load_recipe(name_or_path: str | Path) -> Recipe:
    """A bundled recipe by name (``modular-addition``) or a YAML file; its name is the file's stem.

    A name that is not a file path (``.yaml``, ``.yml``) must be a bundled recipe's, exactly: it is never
    joined to a folder, so ``../../x`` is no recipe rather than a file outside the recipes."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise LabError(f"recipe file {path}: no such file")
        text, name = path.read_text(encoding="utf-8"), path.stem
    else:
        if str(name_or_path) not in recipe_names():
            shown = repr(str(name_or_path)[:60])
            raise LabError(f"no recipe {shown}: use one of {', '.join(recipe_names())} "
                           "or the path of a .yaml recipe file")
        text, name = recipe_file(str(name_or_path)).read_text(encoding="utf-8"), str(name_or_path)
    return parse_recipe(_read_yaml(text, name), name)


def _read_yaml(text: str, name: str) -> dict:
    try:
        raw = load_yaml(text)  # aliases and a key named twice refused (atlas._yaml)
    except yaml.YAMLError as exc:
        raise LabError(f"recipe {name!r} is not valid YAML: {problem_line(exc)}") from None
    if not isinstance(raw, dict):
        raise LabError(f"recipe {name!r} must be a YAML mapping with fields {', '.join(_TOP)}; "
                       f"it holds a {type(raw).__name__}")
    return raw


_TOP = ("kind", "description", "architecture", "data", "optimiser", "schedule", "steps", "batch", "checkpoints",
        "seed")
_ARCH = ("shape", "layers", "heads", "kv_heads", "d_model", "d_mlp", "context", "init_std")
_MODULAR = ("p", "train_fraction", "split_seed")
_CORPUS = ("corpus", "domains", "train_fraction", "split_seed", "window", "curriculum")


class _Fields:
    """Reads one mapping of a recipe, naming the field path in every error."""

    def __init__(self, recipe: str, where: str, raw, allowed: tuple[str, ...]):
        self.recipe, self.where = recipe, where
        if not isinstance(raw, dict):
            raise self.error(f"must be a mapping with fields {', '.join(allowed)}")
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"fields: {', '.join(allowed)}"
                raise LabError(f"recipe {recipe!r}: unknown field {self.path(key)!r} ({hint})")
        self.raw = raw

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, message: str, key: str | None = None) -> LabError:
        return LabError(f"recipe {self.recipe!r}: {self.path(key) if key else self.where or 'the recipe'} {message}")

    def _get(self, key, default):
        if key not in self.raw or self.raw[key] is None:
            if default is _REQUIRED:
                raise self.error("is required", key)
            return default
        return self.raw[key]

    def int(self, key, default=None, *, low=None, high=None) -> int:
        """A whole number in [low, high]; ``high`` by default the field's ceiling in ``LIMITS``, if it has one."""
        high = LIMITS.get(self.path(key)) if high is None else high
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"must be a whole number, not {value!r}", key)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise self.error(f"must be {bounds}, not {value}", key)
        return value

    def float(self, key, default=None, *, low=None, high=None, open_low=False, open_high=False) -> float:
        value = self._get(key, default)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(f"must be a finite number, not {value!r}", key)
        too_low = low is not None and (value <= low if open_low else value < low)
        too_high = high is not None and (value >= high if open_high else value > high)
        if too_low or too_high:
            lo = "(" if open_low else "["
            hi = ")" if open_high or high is None else "]"
            raise self.error(f"must lie in {lo}{low}, {'inf' if high is None else high}{hi}, not {value}", key)
        return float(value)

    def choice(self, key, options, default=None) -> str:
        value = self._get(key, default)
        if value not in options:
            raise self.error(f"must be one of {', '.join(options)}, not {value!r}", key)
        return value


_REQUIRED = object()


def parse_recipe(raw: dict, name: str, *, description: str | None = None) -> Recipe:
    """Validate a recipe mapping and fill in its defaults."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise LabError(f"recipe name {str(name)[:60]!r} cannot name a folder of the Lab cache: use letters, digits, "
                       "'.', '_' and '-' (no '..'); a recipe file is named by its stem")
    top = _Fields(name, "", raw, _TOP)
    kind = top.choice("kind", KINDS, _REQUIRED)
    steps = top.int("steps", _REQUIRED, low=1)
    if kind == "finetune":
        if "architecture" in raw:
            raise top.error("takes its architecture from data.init; remove it", "architecture")
        architecture = None
    else:
        architecture = _architecture(name, top._get("architecture", _REQUIRED))
    data = (_modular_data(name, top._get("data", _REQUIRED)) if kind == "modular_addition"
            else _corpus_data(name, top._get("data", _REQUIRED), kind))
    if isinstance(data, CorpusData) and architecture is not None and data.window > architecture.context:
        raise LabError(f"recipe {name!r}: data.window ({data.window}) exceeds architecture.context "
                       f"({architecture.context}); shorten the window or raise the context")
    if kind == "modular_addition" and architecture.context < 3:
        raise top.error("must be at least 3 for the inputs [a, b, =]", "architecture.context")
    batch = raw.get("batch")
    if batch == "full":
        if kind != "modular_addition":
            raise top.error("'full' is only for modular_addition; give the sequences per step", "batch")
        batch = None
    else:
        batch = top.int("batch", _REQUIRED, low=1)
    optimiser = _Fields(name, "optimiser", top._get("optimiser", _REQUIRED), ("lr", "betas", "weight_decay"))
    betas = optimiser._get("betas", [0.9, 0.999])
    if not (isinstance(betas, list) and len(betas) == 2):
        raise optimiser.error("must be a list of two numbers in [0, 1), e.g. [0.9, 0.98]", "betas")
    beta_fields = _Fields(name, "optimiser.betas", {"beta1": betas[0], "beta2": betas[1]}, ("beta1", "beta2"))
    schedule = _Fields(name, "schedule", top._get("schedule", {"kind": "constant"}), ("kind", "warmup_steps"))
    schedule_kind = schedule.choice("kind", SCHEDULES, "constant")
    checkpoints = _Fields(name, "checkpoints", top._get("checkpoints", {}), ("log", "every", "initial"))
    initial = checkpoints._get("initial", True)
    if not isinstance(initial, bool):
        raise checkpoints.error(f"must be true or false, not {initial!r}", "initial")
    log, every = checkpoints.int("log", 0, low=0), checkpoints.int("every", 0, low=0)
    if (most := 2 + log + (steps // every if every else 0)) > MAX_CHECKPOINTS:
        raise checkpoints.error(f"would write up to {most} checkpoints of {steps} steps (at most {MAX_CHECKPOINTS}); "
                                "raise checkpoints.every or lower checkpoints.log")
    if architecture is not None and (size := parameter_count(architecture)) > MAX_PARAMETERS:
        raise top.error(f"has about {size:.3g} parameters (at most {MAX_PARAMETERS:.0e} are trained here); "
                        "make the model smaller", "architecture")
    return Recipe(
        name=name, kind=kind,
        description=description if description is not None else str(raw.get("description", "")).strip(),
        architecture=architecture, data=data,
        optimiser=Optimiser(optimiser.float("lr", _REQUIRED, low=0, open_low=True),
                            (beta_fields.float("beta1", low=0, high=1, open_high=True),
                             beta_fields.float("beta2", low=0, high=1, open_high=True)),
                            optimiser.float("weight_decay", 0.0, low=0)),
        schedule=Schedule(schedule_kind, schedule.int("warmup_steps", 0, low=0) if schedule_kind != "constant"
                          else _no_warmup(schedule)),
        steps=steps, batch=batch,
        checkpoints=Checkpoints(log, every, initial),
        seed=top.int("seed", 0, low=0, high=MAX_SEED),
    )


def parameter_count(arch: Architecture) -> int:
    """The weights of a fresh model of shape ``arch``, biases and norms aside: an upper estimate that takes the
    vocabulary at its largest (1,024 tokens; ``p`` + 5 for modular addition, 261 for a byte-level LM)."""
    vocab, d = 1_024, arch.d_model
    attention = 2 * d * d + 2 * d * (d // arch.heads) * arch.kv_heads  # queries and output; keys and values
    mlp = (2 if arch.shape == "gpt2" else 3) * d * arch.d_mlp  # GELU: in, out; SwiGLU: gate, up, down
    embeddings = vocab * d * (1 if arch.shape == "gpt2" else 2) + (arch.context * d if arch.shape == "gpt2" else 0)
    return arch.layers * (attention + mlp) + embeddings


def _no_warmup(schedule: _Fields) -> int:
    if schedule.raw.get("warmup_steps"):
        raise schedule.error("is only for kind linear_warmup", "warmup_steps")
    return 0


def _architecture(name: str, raw) -> Architecture:
    f = _Fields(name, "architecture", raw, _ARCH)
    shape = f.choice("shape", SHAPES, _REQUIRED)
    heads = f.int("heads", _REQUIRED, low=1)
    d_model = f.int("d_model", _REQUIRED, low=1)
    kv_heads = f.int("kv_heads", heads, low=1)
    if shape == "gpt2" and kv_heads != heads:
        raise f.error("is only for shape llama (gpt2 has no grouped-query attention); remove it", "kv_heads")
    if d_model % heads:
        raise f.error(f"({d_model}) must be a multiple of heads ({heads})", "d_model")
    if heads % kv_heads:
        raise f.error(f"({kv_heads}) must divide heads ({heads})", "kv_heads")
    return Architecture(shape, f.int("layers", _REQUIRED, low=1), heads, kv_heads, d_model,
                        f.int("d_mlp", 4 * d_model, low=1), f.int("context", _REQUIRED, low=1),
                        f.float("init_std", 0.02, low=0, open_low=True))


def _modular_data(name: str, raw) -> ModularData:
    f = _Fields(name, "data", raw, _MODULAR)
    return ModularData(f.int("p", _REQUIRED, low=2),
                       f.float("train_fraction", _REQUIRED, low=0, high=1, open_low=True, open_high=True),
                       f.int("split_seed", 0, low=0, high=MAX_SEED))


def _corpus_data(name: str, raw, kind: str) -> CorpusData:
    f = _Fields(name, "data", raw, _CORPUS + (("init",) if kind == "finetune" else ()))
    corpus = f._get("corpus", "starter")
    if not isinstance(corpus, str) or not corpus:
        raise f.error("must be a JSONL path or 'starter'", "corpus")
    corpus = corpus if corpus == "starter" else str(Path(corpus).expanduser().resolve())
    domains = f._get("domains", None)
    if domains is not None and (not isinstance(domains, list) or not domains
                                or not all(isinstance(d, str) for d in domains) or len(set(domains)) < len(domains)):
        raise f.error("must be a list of distinct domain ids (or left out: every domain)", "domains")
    curriculum = f._get("curriculum", "shuffled")
    if isinstance(curriculum, list):
        if not curriculum or not all(isinstance(d, str) for d in curriculum) or len(set(curriculum)) < len(curriculum):
            raise f.error("as a domain order must list distinct domain ids", "curriculum")
        if domains is not None and set(domains) != set(curriculum):
            raise f.error(f"names the domains {sorted(curriculum)} but data.domains is {sorted(domains)}; "
                          "list the same domains (or leave data.domains out)", "curriculum")
        domains, curriculum = list(curriculum) if domains is None else domains, tuple(curriculum)
    elif curriculum != "shuffled":
        raise f.error(f"must be 'shuffled' or a list of domains in training order, not {curriculum!r}", "curriculum")
    init = None
    if kind == "finetune":
        init = f._get("init", _REQUIRED)
        if not isinstance(init, str):
            raise f.error("must be an Atlas model name, e.g. smollm2-135m-instruct", "init")
    return CorpusData(corpus, None if domains is None else tuple(domains),
                      f.float("train_fraction", 0.75, low=0, high=1, open_low=True, open_high=True),
                      f.int("split_seed", 0, low=0, high=MAX_SEED), f.int("window", _REQUIRED, low=2), curriculum, init)


def _drop_none(raw: dict) -> dict:
    """Leave out unset fields (``as_dict`` writes them as None), as a file would."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in raw.items() if v is not None}


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


public("atlas.lab", Recipe, load_recipe, recipe_names)
