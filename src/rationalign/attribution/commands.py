"""``rationalign priors``: compute word priors for a data split into a resumable SQLite store.

The lead wires :func:`register` into the main Typer app. Every user-input problem raises a
:class:`~rationalign.errors.RationalignError` (the CLI prints one line and exits 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rationalign.errors import ConfigError, DataError, located

METHODS = ("lime", "cap", "ig", "gxi", "attention", "shap", "hybrid")
MODEL_METHODS = ("ig", "gxi", "attention", "shap")  # need the classifier itself (gradients, attention)
DEFAULT_MASKS = {"lime": 1000, "cap": 64}
HYBRID_DEFAULT = "cap,lime,ig"


class _Keyed:
    """An attributor with a store key: ``fingerprint`` and ``params()`` for methods that lack them."""

    def __init__(self, inner: Any, fingerprint: str, params: dict):
        self.inner = inner
        self.name = inner.name
        self.fingerprint = fingerprint
        self._params = params

    def params(self) -> dict:
        return self._params

    @property
    def cost(self):
        return getattr(self.inner, "cost", None)

    def attribute(self, texts, targets):
        return self.inner.attribute(texts, targets)


def _simple_params(attributor: Any) -> dict:
    """The scalar settings of an attributor (``n_steps``, ``output``, ...), for its store key."""
    if callable(getattr(attributor, "params", None)):
        return attributor.params()
    return {
        k: v
        for k, v in sorted(vars(attributor).items())
        if not k.startswith("_") and isinstance(v, str | int | float | bool) and "batch" not in k
    }


def _load_split(data: str, split: str, text_field: str, label_field: str):
    from rationalign.data.io import canonical_split, load_dataset, resolve_data, split_files

    path = resolve_data(data)
    if path.is_dir():
        files = split_files(path)
        found = files.get(canonical_split(split))
        if found is None:
            raise DataError(
                located(
                    path,
                    None,
                    f"no split {split!r} (has: {', '.join(sorted(files)) or 'none'})",
                    "pass --split with one of those",
                )
            )
        path = found
    return load_dataset(path, text_field=text_field, label_field=label_field)


def _load_classifier(model: str):
    from rationalign.models.classifier import IntentClassifier

    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            located(
                model,
                None,
                "no such model folder",
                "pass --model a folder saved by 'rationalign train' (e.g. runs/x/model)",
            )
        )
    return IntentClassifier.load(folder)


def _classifier_fingerprint(clf) -> str:
    from rationalign.teachers.classifier import ClassifierTeacher

    return ClassifierTeacher(clf).fingerprint


def _load_teacher(spec: str, label_space, train_examples):
    """A teacher from a spec (``rationalign.teachers.spec.load_teacher``: ``llm:smollm2-135m?shots=1``,
    ``model:FOLDER``, ``http:URL?model=x``); a bare classifier folder is read as ``model:FOLDER``."""
    from rationalign.teachers.spec import load_teacher

    if ":" not in spec and Path(spec).expanduser().is_dir():
        spec = f"model:{spec}"
    return load_teacher(spec, label_space, examples=train_examples)


def _build(
    method: str,
    *,
    clf,
    teacher,
    n_masks: int | None,
    seed: int,
    hybrid_of: str,
    fusion: str,
    normalise: str,
    clf_teacher=None,
):
    from rationalign.attribution.cap import CAPPrior
    from rationalign.attribution.lime import LimePrior

    if method == "hybrid":
        from rationalign.attribution.hybrid import FUSIONS, HybridPrior

        names = [n.strip() for n in hybrid_of.split(",") if n.strip()]
        bad = [n for n in names if n not in METHODS or n == "hybrid"]
        if not names or bad or len(set(names)) != len(names):
            raise ConfigError(
                f"--hybrid-of {hybrid_of!r}: give distinct methods from {', '.join(METHODS[:-1])}"
            )
        if fusion not in FUSIONS or fusion == "weighted":
            raise ConfigError(f"--fuse {fusion!r}: choose mean or max")
        parts = [
            _build(
                n,
                clf=clf,
                teacher=teacher,
                n_masks=n_masks,
                seed=seed,
                hybrid_of="",
                fusion="",
                normalise="",
                clf_teacher=clf_teacher,
            )
            for n in names
        ]
        try:
            return HybridPrior(parts, how=fusion, normalise=normalise)
        except ValueError as err:
            raise ConfigError(f"--normalise {normalise!r}: {err}") from None
    if method == "lime":
        scorer = clf if clf is not None else teacher
        if scorer is None:
            raise ConfigError("--method lime needs --model (a classifier folder) or --teacher")
        return LimePrior(scorer, n_samples=n_masks or DEFAULT_MASKS["lime"], seed=seed)
    if method == "cap":
        if teacher is None and clf is None:
            raise ConfigError(
                "--method cap needs --teacher (e.g. llm:smollm2-135m) or --model (a classifier folder)"
            )
        if teacher is None:
            from rationalign.teachers.classifier import ClassifierTeacher

            teacher = clf_teacher if clf_teacher is not None else ClassifierTeacher(clf)
        return CAPPrior(teacher, n_masks=n_masks or DEFAULT_MASKS["cap"], seed=seed)
    if clf is None:
        raise ConfigError(
            f"--method {method} needs --model (a classifier folder): it reads the model's internals"
        )
    if method == "ig":
        from rationalign.attribution.integrated_gradients import IntegratedGradients

        inner = IntegratedGradients(clf)
    elif method == "gxi":
        from rationalign.attribution.gradient import GradientXInput

        inner = GradientXInput(clf)
    elif method == "attention":
        from rationalign.attribution.attention import AttentionPrior

        inner = AttentionPrior(clf)
    else:
        from rationalign.attribution.shap_prior import ShapPrior

        inner = ShapPrior(clf)
    return _Keyed(inner, _classifier_fingerprint(clf), _simple_params(inner))


def _targets(dataset, label_space) -> list[int]:
    ids = []
    for example in dataset:
        if example.label not in label_space:
            raise DataError(
                located(
                    example.source or dataset.path or dataset.name,
                    example.line,
                    f"label {example.label!r} is not among the {len(label_space)} labels of the model/teacher",
                    "use data with the model's labels, or a model trained on these labels",
                )
            )
        ids.append(label_space.id(example.label))
    return ids


def priors(
    data: Annotated[
        str, typer.Option(help="Data file, split folder or dataset name (banking77, hwu64, clinc150).")
    ],
    store: Annotated[Path, typer.Option(help="SQLite prior store; created if missing, resumed if present.")],
    method: Annotated[str, typer.Option(help=f"One of: {', '.join(METHODS)}.")] = "lime",
    model: Annotated[
        str | None, typer.Option(help="Classifier folder (LIME, IG, GxI, attention, SHAP).")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Teacher for CAP: llm:smollm2-135m[?shots=1], model:FOLDER, http:URL?model=x, or a folder."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to explain when --data is a folder.")] = "train",
    limit: Annotated[int | None, typer.Option(help="Only the first N examples of the split.")] = None,
    export: Annotated[
        Path | None, typer.Option(help="Also write this run's priors as JSON lines here.")
    ] = None,
    n_masks: Annotated[
        int | None, typer.Option(help="Masks per utterance (LIME default 1000, CAP 64).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the mask sampler.")] = 0,
    batch_size: Annotated[
        int, typer.Option(help="Utterances per stored batch (a kill loses at most one).")
    ] = 32,
    hybrid_of: Annotated[str, typer.Option(help="Methods fused by --method hybrid.")] = HYBRID_DEFAULT,
    fuse: Annotated[str, typer.Option(help="Hybrid fusion: mean or max.")] = "mean",
    normalise: Annotated[
        str, typer.Option(help="Hybrid per-utterance normalisation: sum, minmax or softmax.")
    ] = "sum",
    text_field: str = "text",
    label_field: str = "label",
    keep_teacher_scores: Annotated[
        bool,
        typer.Option(
            help="Keep the teacher's scores of masked texts in the store: a later CAP or LIME run of the "
            "same teacher reads them instead of asking again."
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary instead of a progress bar.")
    ] = False,
) -> None:
    """Compute word priors (LIME, CAP, IG, ...) for every utterance of a split, resumably."""
    from rich.console import Console

    from rationalign.attribution.store import PriorStore, compute_priors

    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is unknown; fix: choose one of {', '.join(METHODS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: fix: give a positive number of examples")
    if n_masks is not None and n_masks < 1:
        raise ConfigError(f"--n-masks {n_masks}: fix: give a positive number of masks")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: fix: give a positive batch size")
    if model is None and teacher is None:
        raise ConfigError("no model: fix: pass --model CLASSIFIER_FOLDER and/or --teacher SPEC")
    dataset = _load_split(data, split, text_field, label_field)
    if limit is not None:
        dataset = dataset.subset(range(min(limit, len(dataset))))
    clf = _load_classifier(model) if model is not None else None
    label_space = clf.label_space if clf is not None else None
    loaded_teacher = None
    if teacher is not None:
        if label_space is None:
            from rationalign.data.types import LabelSpace

            label_space = LabelSpace.from_labels(_label_universe(data, dataset, text_field, label_field))
        loaded_teacher = _load_teacher(teacher, label_space, _train_examples(data, text_field, label_field))
        if clf is not None and loaded_teacher.label_space != clf.label_space:
            raise ConfigError("--model and --teacher have different label spaces; fix: pass a matching pair")
        label_space = loaded_teacher.label_space
    targets = _targets(dataset, label_space)
    from rationalign.teachers.cache import CachedTeacher
    from rationalign.teachers.classifier import ClassifierTeacher

    # the teachers CAP (and LIME with --teacher) score masked texts with; the store is attached once open
    cached = [CachedTeacher(loaded_teacher)] if loaded_teacher is not None else []
    clf_teacher = CachedTeacher(ClassifierTeacher(clf)) if clf is not None else None
    attributor = _build(
        method,
        clf=clf,
        teacher=cached[0] if cached else None,
        n_masks=n_masks,
        seed=seed,
        hybrid_of=hybrid_of,
        fusion=fuse,
        normalise=normalise,
        clf_teacher=clf_teacher,
    )
    with PriorStore(store) as prior_store:
        for scorer in [*cached, clf_teacher]:
            if scorer is not None and keep_teacher_scores:
                scorer.store = prior_store
        run = compute_priors(
            attributor, dataset.texts, targets, prior_store, batch_size=batch_size, progress=not as_json
        )
        summary = {"store": str(store), "method": attributor.name, "data": str(dataset.path), **run.summary()}
        counts = [t.text_counts() for t in [*cached, clf_teacher] if t is not None]
        if any(any(c.values()) for c in counts):  # where the teacher scores of masked texts came from
            summary["teacher_texts"] = {k: sum(c[k] for c in counts) for k in counts[0]}
        if export is not None:
            _export(run, export)
            summary["export"] = str(export)
    if as_json:
        print(json.dumps(summary))
        return
    console = Console()
    console.print(
        f"[green]{summary['utterances']} priors[/green] ({run.computed} computed, {run.reused} already stored) "
        f"in {store}"
    )
    line = f"  {run.seconds:.2f} s"
    if run.computed:
        line += f", {run.seconds / run.computed:.4f} s per computed utterance"
    if run.cost is not None and run.computed:
        line += f", {run.cost.texts_per_utterance:.1f} texts scored per utterance"
        if run.cost.tokens:
            line += f", {run.cost.tokens_per_utterance:.0f} teacher tokens per utterance"
    console.print(line)
    if "teacher_texts" in summary:
        texts = summary["teacher_texts"]
        console.print(
            f"  teacher: {texts['scored']} masked texts scored, {texts['from_store']} read back from the store"
        )
    if export is not None:
        console.print(f"  exported to {export}")


def _train_examples(data: str, text_field: str, label_field: str):
    """The train split next to ``data`` (in-context examples for ``shots``), never the split explained."""
    from rationalign.data.io import load_dataset, resolve_data, split_files

    path = resolve_data(data)
    train = split_files(path).get("train") if path.is_dir() else None
    return load_dataset(train, text_field=text_field, label_field=label_field) if train is not None else None


def _label_universe(data: str, dataset, text_field: str, label_field: str) -> list[str]:
    """All labels of the dataset (its train split when ``data`` is a folder), so ids match training."""
    from rationalign.data.io import load_dataset, resolve_data, split_files

    path = resolve_data(data)
    if path.is_dir():
        train = split_files(path).get("train")
        if train is not None:
            return load_dataset(train, text_field=text_field, label_field=label_field).labels + dataset.labels
    return dataset.labels


def _export(run, path: Path) -> None:
    """This run's priors (input order) as JSON lines, written to a temporary file and renamed."""
    from rationalign.files import atomic_writer

    with atomic_writer(path) as out:
        for key, attribution in zip(run.keys, run.attributions, strict=True):
            record = {
                "text": key.text,
                "target": key.target,
                "method": key.method,
                "fingerprint": key.fingerprint,
                "params": json.loads(key.params),
                "words": attribution.words,
                "scores": [float(s) for s in attribution.scores],
                "meta": attribution.meta,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``rationalign priors`` to ``app``."""
    app.command("priors")(priors)
