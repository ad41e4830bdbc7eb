"""The ``atlas`` command: measure, report, list models.

    atlas measure perplexity --model smollm2-135m-instruct --corpus starter --json
    atlas report --db sqlite:///atlas.db --out reports
    atlas models
"""

from __future__ import annotations

import json
import math
import os

import click

DEFAULT_DB = "sqlite:///atlas.db"


def _clean(value):
    """JSON has no NaN: missing numbers are null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _records(df) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def measurement_options(fn):
    """Options every ``atlas measure`` instrument takes."""
    options = [
        click.option("--model", "model_name", default="smollm2-135m-instruct", show_default=True,
                     help="registry name, local checkpoint directory, or Hugging Face id"),
        click.option("--corpus", "corpus_path", default="starter", show_default=True,
                     help="JSONL corpus file ('starter': the bundled starter corpus)"),
        click.option("--db", default=lambda: os.environ.get("ATLAS_DB", DEFAULT_DB), show_default="ATLAS_DB or "
                     + DEFAULT_DB, help="SQLAlchemy URL of the store"),
        click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])),
        click.option("--dtype", default="auto", show_default=True,
                     type=click.Choice(["auto", "float32", "bfloat16", "float16"])),
        click.option("--per-domain", type=int, default=None, help="use only the first N passages of each domain"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--no-reuse", is_flag=True, help="measure again even if an identical run is stored"),
        click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run(instrument: str, *, model_name, corpus_path, db, device, dtype, per_domain, seed, no_reuse, as_json,
         **settings):
    """Load, measure through CISP, and return the run result; bad input becomes one clear error."""
    from ._cisp import IsolationBreach, run_instrument
    from ._corpus import CorpusError, load_corpus
    from ._models import ModelUnavailable, load_model
    from ._schema import SchemaViolation
    from ._store import Store

    try:
        corpus = load_corpus(corpus_path).sample(per_domain)
        lm = load_model(model_name, device=device, dtype=dtype)
        return run_instrument(Store(db), lm, corpus, instrument, reuse=not no_reuse, progress=not as_json,
                              seed=seed, **settings)
    except (CorpusError, ModelUnavailable, SchemaViolation, IsolationBreach, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="atlas-landscape")
def main():
    """Atlas: measure the loss landscape of language models and judge the Framework's predictions."""


@main.group()
def measure():
    """Run one instrument and store its validated tables."""


@measure.command("perplexity")
@measurement_options
@click.option("--bos-policy", default="prepend", show_default=True, type=click.Choice(["prepend", "none"]),
              help="prepend: the model's document-start token gives context to the first token; none: it is unscored")
@click.option("--batch-size", default=8, show_default=True, type=int)
def measure_perplexity_cmd(bos_policy, batch_size, **common):
    """Per-passage and per-domain perplexity, with bootstrap CIs."""
    result = _run("perplexity", bos_policy=bos_policy, batch_size=batch_size, **common)
    domains = result.tables["perplexity_domains"]
    if common["as_json"]:
        click.echo(json.dumps({
            "run_id": result.run.id, "reused": result.reused, "model": result.run.model,
            "model_revision": result.run.model_revision, "corpus_hash": result.run.corpus_hash,
            "bos_policy": bos_policy,
            "rows": _records(result.tables["perplexity"]),
            "domains": _records(domains[["domain", "n", "ppl", "ci_low", "ci_high", "bits_per_byte"]]),
        }))
        return
    click.echo(f"run {result.run.id}{' (reused)' if result.reused else ''}: {result.run.model} on "
               f"{result.run.corpus} ({result.run.corpus_hash[:19]})")
    click.echo(domains.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


@main.command()
@click.option("--db", default=lambda: os.environ.get("ATLAS_DB", DEFAULT_DB), help="SQLAlchemy URL of the store")
@click.option("--out", default="reports", show_default=True, help="directory for index.html")
def report(db, out):
    """Re-render the HTML verdict report from the store."""
    from ._report import render_report
    from ._store import Store

    click.echo(render_report(Store(db), out))


@main.command()
def models():
    """List the model registry."""
    from ._models import MODELS

    for spec in MODELS.values():
        click.echo(f"{spec.name:24} {spec.source:5} {spec.location:48} {spec.description}")


@main.command()
@click.option("--db", default=lambda: os.environ.get("ATLAS_DB", DEFAULT_DB), help="SQLAlchemy URL of the store")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with a `verdicts` list")
def verdicts(db, as_json):
    """The latest verdict of every prediction version on every model."""
    from ._store import Store

    fields = ("prediction", "version", "form", "model", "outcome", "effect", "ci_low", "ci_high", "n",
              "criterion_hash", "reason")
    latest = [{f: _clean(getattr(v, f)) for f in fields} for v in Store(db).latest_verdicts()]
    if as_json:
        click.echo(json.dumps({"verdicts": latest}))
        return
    for v in latest:
        ci = "" if v["ci_low"] is None else f"[{v['ci_low']:.3g}, {v['ci_high']:.3g}]"
        effect = "" if v["effect"] is None else f"{v['effect']:.3g}"
        click.echo(f"{v['prediction']:40} {v['version']} {v['form']:8} {v['model']:28} {v['outcome']:13} "
                   f"{effect:>8} {ci:>18} n={v['n']}")
