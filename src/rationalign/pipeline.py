"""``rationalign distill``: teacher -> soft labels -> priors -> aligned student -> evaluation -> registry.

Every stage caches its output in the run directory or the prior store, so re-running a config (or
resuming after a crash) recomputes nothing that is already there.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from rationalign import __version__
from rationalign.config import dump_yaml
from rationalign.data.io import DataBundle, DataConfig, load_data
from rationalign.data.transfer import TransferConfig, TransferSet, load_transfer_set
from rationalign.data.types import Example, IntentDataset
from rationalign.device import DEVICE_PATTERN, resolve_device
from rationalign.errors import ConfigError
from rationalign.files import atomic_write_text
from rationalign.precision import Precision
from rationalign.teachers.self_training import (
    PSEUDO_LABELS,
    SelfTrainConfig,
    check_not_empty,
    round_dir,
    select_pseudo_labels,
)
from rationalign.training.config import TrainConfig
from rationalign.training.distill import DistillationObjective, DistillConfig
from rationalign.training.run import (
    CONFIG_FILE,
    MANIFEST,
    RunConfig,
    evaluate_classifier,
    git_commit,
    new_classifier,
    train_run,
)
from rationalign.training.trainer import Trainer

console = Console(stderr=True)
PriorMethod = Literal["cap", "lime", "ig", "gxi", "shap", "attention"]
GRADIENT_METHODS = frozenset({"ig", "gxi", "shap", "attention"})  # need a classifier's gradients/internals


class EnsembleMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: str = Field(description="teacher spec of the member, e.g. model:runs/t/model?precision=bfloat16")
    weight: float = Field(1.0, ge=0, description="mixture weight (members' weights need not sum to 1)")


class EnsembleConfig(BaseModel):
    """A weighted mixture of teachers, with optional rules and an adjudicator (``EnsembleTeacher``)."""

    model_config = ConfigDict(extra="forbid")

    members: list[EnsembleMember] = Field(min_length=1, description="the mixture's teachers and weights")
    rules: str | None = Field(
        None, description="YAML rule file (pattern -> label) that overrides the mixture"
    )
    adjudicator: str | None = Field(
        None, description="teacher spec asked only when the mixture's top-2 margin is below margin_threshold"
    )
    margin_threshold: float = Field(0.2, ge=0, le=1, description="adjudicate below this top-1 - top-2 margin")
    adjudicator_weight: float = Field(0.5, ge=0, le=1, description="share of the adjudicator in those rows")
    gradient_member: int = Field(
        0,
        ge=0,
        description="index of the classifier member whose gradients give IG / gxi / SHAP / attention priors "
        "(an ensemble has no gradients of its own); CAP and LIME query the whole ensemble",
    )


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: str | None = Field(None, description="teacher spec, e.g. model:runs/t/model or llm:smollm2-135m")
    ensemble: EnsembleConfig | None = Field(
        None, description="a mixture of teacher specs (instead of spec or train)"
    )
    train: TrainConfig | None = Field(
        None, description="train a classifier teacher first (when spec is None)"
    )
    dir: str | None = Field(
        None, description="where the trained teacher lives (shared by configs); default <run>/teacher"
    )
    self_train: SelfTrainConfig | None = Field(
        None,
        description="retrain the trained teacher on its own confident labels of the transfer set (needs "
        "train and transfer); the last round's teacher gives the soft labels and priors",
    )
    precision: Precision = Field(
        "float32",
        description="forward passes of a trained teacher (soft labels, CAP/LIME masks, IG/SHAP priors); "
        "bfloat16 is about 3x faster on CPUs with AVX512-BF16/AMX",
    )
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN,
        description="where a trained teacher runs its forward passes (soft labels, CAP/LIME masks, IG): "
        "auto (cuda when available, else cpu), cpu or cuda[:i]",
    )


class PriorsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[PriorMethod] = Field(
        default_factory=lambda: ["cap", "lime", "ig"],
        description="prior methods; several are fused (CAP-Hybrid)",
    )
    fuse: Literal["mean", "max", "weighted"] = Field(
        "mean", description="CAP-Hybrid fusion of several methods (per-utterance normalised first)"
    )
    weights: list[float] | None = Field(None, description="per-method weights for fuse: weighted")
    cap_teacher: str | None = Field(None, description="teacher spec CAP queries (default: the teacher)")
    cap_target: Literal["margin", "logprob", "prob"] = Field(
        "margin",
        description="CAP regresses the gold class's margin over the most confusable class, or its log-prob",
    )
    n_masks: int = Field(64, ge=4, description="CAP: masked variants scored by the teacher per utterance")
    lime_samples: int = Field(
        256, ge=4, description="LIME: masked variants per utterance (shared with CAP's)"
    )
    ig_steps: int = Field(16, ge=1, description="Integrated Gradients: quadrature steps")
    shap_max_evals: int = Field(200, ge=8, description="model calls per utterance for shap (optional extra)")
    store: str | None = Field(None, description="SQLite prior store (default: <output_dir>/priors.sqlite)")
    keep_teacher_scores: bool = Field(
        True,
        description="keep the teacher's scores of masked texts in the store, so a later CAP or LIME run "
        "(another variant, a resumed job) reads them instead of asking the teacher again",
    )
    seed: int = Field(0, description="seed of the mask samplers")


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attack_set: str | None = Field(None, description="adversarial JSONL from `rationalign attack` (optional)")
    attack_limit: int | None = Field(
        None,
        ge=1,
        description="without attack_set: attack the first N test utterances (synonym + confusable)",
    )
    suite: bool = Field(True, description="run the full evaluation suite on the test split")
    limit: int | None = Field(300, ge=1, description="examples for the expensive metrics (faithfulness, ...)")
    store_calibration: bool = Field(
        True,
        description="write the temperature the suite fits on validation (and the out-of-scope abstain "
        "threshold) into the student's folder, so `predict` and `serve` give calibrated probabilities",
    )


class DistillRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataConfig
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    priors: PriorsConfig | None = Field(default_factory=PriorsConfig, description="null: no alignment term")
    student: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    transfer: TransferConfig | None = Field(
        None,
        description="unlabelled in-domain text the teacher labels: extra rows that train the KD term only "
        "(e.g. {split: train} with a few-shot train_split); null: the labelled examples alone",
    )
    output_dir: str = Field(
        "runs/distill", description="run directory (manifest, model, suite, report inputs)"
    )


@dataclass
class DistillResult:
    run_dir: Path
    model_dir: Path
    manifest: dict[str, Any]


def _teacher(cfg: DistillRunConfig, bundle: DataBundle, run_dir: Path):
    from rationalign.teachers.spec import load_teacher

    if cfg.teacher.spec and cfg.teacher.ensemble:
        raise ConfigError("distill config: teacher has both spec and ensemble; fix: keep one of them")
    if cfg.teacher.ensemble:
        return _ensemble_teacher(cfg.teacher.ensemble, bundle)
    if cfg.teacher.spec:
        return load_teacher(cfg.teacher.spec, bundle.label_space, examples=bundle.train)
    if cfg.teacher.train is None:
        raise ConfigError(
            "distill config: teacher needs spec or train; fix: e.g. teacher: {spec: model:runs/t/model}"
        )
    teacher_dir = _teacher_dir(cfg, run_dir)
    if not (teacher_dir / MANIFEST).is_file():
        console.rule("[bold]teacher: training")
        train_run(RunConfig(data=cfg.data, train=cfg.teacher.train, output_dir=str(teacher_dir)), resume=True)
    return _classifier_teacher(cfg, teacher_dir)


def _classifier_teacher(cfg: DistillRunConfig, teacher_dir: Path):
    """The trained classifier teacher in ``teacher_dir``, on the configured device and precision."""
    from rationalign.teachers.classifier import ClassifierTeacher

    device = str(resolve_device(cfg.teacher.device))
    return ClassifierTeacher(teacher_dir / "model", device=device, precision=cfg.teacher.precision)


def _teacher_dir(cfg: DistillRunConfig, run_dir: Path) -> Path:
    return Path(cfg.teacher.dir) if cfg.teacher.dir else run_dir / "teacher"


def _check_self_train(cfg: DistillRunConfig) -> None:
    if cfg.teacher.self_train is None:
        return
    if cfg.teacher.train is None or cfg.teacher.spec or cfg.teacher.ensemble:
        raise ConfigError(
            "distill config: teacher.self_train retrains a classifier teacher; fix: give teacher.train "
            "(not spec or ensemble), or drop self_train"
        )
    if cfg.transfer is None:
        raise ConfigError(
            "distill config: teacher.self_train needs unlabelled text to label; fix: add a transfer set, "
            "e.g. transfer: {split: train}"
        )


def self_train_round_dirs(cfg: DistillRunConfig, transfer: TransferSet, run_dir: Path) -> list[Path]:
    """The folders of the self-trained teachers, round 1 first. Named by a hash of what decides them, so
    seeds and variants share them; ``rounds`` is left out, so a 2-round config reuses a 1-round one's."""
    st = cfg.teacher.self_train
    assert st is not None and cfg.teacher.train is not None
    stamp = {
        "data": cfg.data.model_dump(mode="json"),
        "teacher": cfg.teacher.train.model_dump(mode="json"),
        "transfer": transfer.fingerprint,
        "self_train": st.model_dump(mode="json", exclude={"rounds"}),
    }
    base = _teacher_dir(cfg, run_dir)
    return [round_dir(base, stamp, r) for r in range(1, st.rounds + 1)]


def trained_teacher_dir(cfg: DistillRunConfig) -> Path | None:
    """The run folder of the teacher a config distils from when it trains one: the last self-training
    round's when ``teacher.self_train`` is set, else ``teacher.dir``; None for a spec or an ensemble."""
    if cfg.teacher.train is None or cfg.teacher.spec or cfg.teacher.ensemble:
        return None
    run_dir = Path(cfg.output_dir)
    if cfg.teacher.self_train is None or cfg.transfer is None:
        return _teacher_dir(cfg, run_dir)
    bundle = load_data(cfg.data)
    return self_train_round_dirs(cfg, load_transfer_set(cfg.transfer, bundle, cfg.data.path), run_dir)[-1]


@dataclass(frozen=True)
class SelfTraining:
    """What ``run_self_training`` made: each round's summary (kept, of, accuracy on valid and test, folder)
    and a loader of the last round's teacher, so a caller that only reads the rounds never loads a model."""

    rounds: list[dict[str, Any]]
    load_teacher: Callable[[], Any]


def run_self_training(
    cfg: DistillRunConfig, bundle: DataBundle, transfer: TransferSet, run_dir: Path
) -> SelfTraining:
    """Each round: the current teacher labels the transfer set, its confident labels join the labelled
    examples, and a new teacher is trained on both from the base model. Finished rounds are read back
    from their folders."""
    st = cfg.teacher.self_train
    assert st is not None and cfg.teacher.train is not None
    # A teacher is loaded only when a round still has to label the transfer set, and the last round's at
    # the end: with every round cached, that is one model load instead of one per round plus the base's.
    load_current = partial(_teacher, cfg, bundle, run_dir)
    rounds = []
    for number, folder in enumerate(self_train_round_dirs(cfg, transfer, run_dir), start=1):
        summary_file = folder / "pseudo_labels.summary.json"
        if not summary_file.is_file():
            console.rule(f"[bold]teacher: self-training round {number}: labelling the transfer set")
            probs = _transfer_soft_labels(cfg, load_current(), transfer, run_dir)
            pseudo = select_pseudo_labels(
                transfer.texts, probs, bundle.label_space, st.min_confidence, st.max_per_label
            )
            check_not_empty(pseudo, st, transfer.source)
            folder.mkdir(parents=True, exist_ok=True)
            pseudo.write_jsonl(folder / PSEUDO_LABELS)
            atomic_write_text(summary_file, json.dumps(pseudo.summary(), indent=1) + "\n")
        if not (folder / MANIFEST).is_file():
            console.rule(f"[bold]teacher: self-training round {number}: training")
            round_cfg = RunConfig(
                data=cfg.data,
                train=cfg.teacher.train.model_copy(update={"epochs": st.epochs or cfg.teacher.train.epochs}),
                pseudo_labelled=[str(folder / PSEUDO_LABELS)],
                output_dir=str(folder),
            )
            train_run(round_cfg, resume=True)
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        rounds.append(
            {
                "round": number,
                "dir": str(folder),
                **json.loads(summary_file.read_text(encoding="utf-8")),
                **{k: manifest["metrics"].get(k) for k in ("best_valid_accuracy", "test_accuracy")},
            }
        )
        load_current = partial(_classifier_teacher, cfg, folder)
    return SelfTraining(rounds, load_current)


def _distillation_teacher(
    cfg: DistillRunConfig, bundle: DataBundle, transfer: TransferSet | None, run_dir: Path
) -> tuple[Any, list[dict[str, Any]]]:
    """The teacher a run distils from and takes its priors from: the last self-training round's when
    ``teacher.self_train`` is set (with what each round kept and reached), else the configured one."""
    if cfg.teacher.self_train is not None:
        assert transfer is not None  # the callers' _check_self_train insists on a transfer set
        trained = run_self_training(cfg, bundle, transfer, run_dir)
        return trained.load_teacher(), trained.rounds
    return _teacher(cfg, bundle, run_dir), []


def _ensemble_teacher(cfg: EnsembleConfig, bundle: DataBundle):
    from rationalign.teachers.ensemble import EnsembleTeacher
    from rationalign.teachers.rules import RuleSet
    from rationalign.teachers.spec import load_teacher

    def load(spec: str):
        return load_teacher(spec, bundle.label_space, examples=bundle.train)

    members = [(load(m.spec), m.weight) for m in cfg.members]
    if cfg.gradient_member >= len(members):
        raise ConfigError(
            f"teacher.ensemble.gradient_member is {cfg.gradient_member} but there are {len(members)} members; "
            f"fix: 0..{len(members) - 1}"
        )
    teacher = EnsembleTeacher(
        members,
        rules=RuleSet.from_yaml(cfg.rules, bundle.label_space) if cfg.rules else None,
        adjudicator=load(cfg.adjudicator) if cfg.adjudicator else None,
        margin_threshold=cfg.margin_threshold,
        adjudicator_weight=cfg.adjudicator_weight,
    )
    # Gradient priors (IG, gxi, SHAP, attention) read ``teacher.clf``: the chosen member's classifier.
    member_clf = getattr(members[cfg.gradient_member][0], "clf", None)
    if member_clf is not None:
        teacher.clf = member_clf
    return teacher


def _attributor(method: str, cfg: PriorsConfig, teacher, bundle: DataBundle):
    from rationalign.attribution.cap import CAPPrior
    from rationalign.attribution.lime import LimePrior

    clf = getattr(teacher, "clf", None)
    if method == "cap":
        cap_teacher = teacher
        if cfg.cap_teacher:
            from rationalign.teachers.cache import CachedTeacher
            from rationalign.teachers.spec import load_teacher

            # its own fingerprint keys its scores, so they share the store without mixing with the teacher's
            cap_teacher = CachedTeacher(
                load_teacher(cfg.cap_teacher, bundle.label_space, examples=bundle.train),
                store=getattr(teacher, "store", None),
            )
        return CAPPrior(cap_teacher, n_masks=cfg.n_masks, target=cfg.cap_target, seed=cfg.seed)
    if method == "lime":
        # the (cached) teacher rather than its classifier: LIME then reuses CAP's scores of the same masks
        return LimePrior(teacher, n_samples=cfg.lime_samples, seed=cfg.seed, fingerprint=teacher.fingerprint)
    if clf is None:
        raise ConfigError(
            f"priors: {method} needs gradients of a classifier teacher; fix: use cap/lime with an LLM teacher"
        )
    if method == "ig":
        from rationalign.attribution.integrated_gradients import IntegratedGradients

        return IntegratedGradients(clf, n_steps=cfg.ig_steps, precision=clf.precision)
    if method == "gxi":
        from rationalign.attribution.gradient import GradientXInput

        return GradientXInput(clf, precision=clf.precision)
    if method == "shap":
        from rationalign.attribution.shap_prior import ShapPrior

        return ShapPrior(clf, max_evals=cfg.shap_max_evals)
    if method == "attention":
        from rationalign.attribution.attention import AttentionPrior

        return AttentionPrior(clf)
    raise ConfigError(f"priors: unknown method {method!r}; fix: choose one of {list(PriorMethod.__args__)}")


def compute_method_priors(
    cfg: DistillRunConfig, teacher, bundle: DataBundle, run_dir: Path, dataset: IntentDataset | None = None
) -> tuple[dict[str, list], dict]:
    """Each configured method's priors of ``dataset`` (default: the training split) and their cost;
    whatever the store already holds is reused."""
    from rationalign.attribution.store import PriorStore, compute_priors
    from rationalign.teachers.cache import CachedTeacher
    from rationalign.teachers.classifier import ClassifierTeacher

    assert cfg.priors is not None
    pc = cfg.priors
    store = PriorStore(pc.store or run_dir / "priors.sqlite")
    teacher = teacher if isinstance(teacher, CachedTeacher) else CachedTeacher(teacher)
    if pc.keep_teacher_scores and teacher.store is None:
        teacher.store = store
    dataset = dataset if dataset is not None else bundle.train
    texts = dataset.texts
    targets = dataset.label_ids(bundle.label_space)
    per_method, cost = {}, {}
    for method in pc.methods:
        attributor = _attributor(method, pc, teacher, bundle)
        fingerprint = getattr(attributor, "fingerprint", None)
        if not fingerprint and method in GRADIENT_METHODS:
            # the model whose gradients these are: the teacher itself, or an ensemble's gradient member
            fingerprint = ClassifierTeacher(teacher.clf).fingerprint
        fingerprint = fingerprint or teacher.fingerprint
        # the teacher this method asks: CAP's own ``cap_teacher`` when one is configured, else the teacher
        asked = getattr(attributor, "teacher", None)
        asked = asked if isinstance(asked, CachedTeacher) else teacher
        before = asked.text_counts()
        result = compute_priors(attributor, texts, targets, store, fingerprint=fingerprint, method=method)
        per_method[method] = result.attributions
        cost[method] = result.summary()
        counts = {k: n - before[k] for k, n in asked.text_counts().items()}
        if any(counts.values()):  # where this method's teacher scores came from
            cost[method]["teacher_texts"] = counts
    return per_method, cost


def compute_run_priors(
    cfg: DistillRunConfig, teacher, bundle: DataBundle, run_dir: Path, dataset: IntentDataset | None = None
) -> tuple[list, dict]:
    """The priors the student is aligned to: one method's, or their CAP-Hybrid fusion."""

    assert cfg.priors is not None
    per_method, cost = compute_method_priors(cfg, teacher, bundle, run_dir, dataset)
    return fuse_priors(cfg, per_method), cost


def shared_priors_config(cfgs: list[DistillRunConfig]) -> DistillRunConfig | None:
    """One config whose priors are every method ``cfgs`` align to, when they all read one shared store
    with the same teacher, data and sampling settings (the variants of one experiment); else None.

    Computing that union in one pass lets LIME reuse CAP's teacher scores of the same masks (the cached
    teacher lives only as long as one pass): run alone after CAP, LIME pays for every mask again."""
    with_priors = [c for c in cfgs if c.priors is not None]
    if not with_priors:
        return None
    first = with_priors[0]
    assert first.priors is not None
    if not first.priors.store or (first.teacher.train is not None and not first.teacher.dir):
        return None  # per-run store or per-run teacher: nothing is shared between the variants

    def shared_part(c: DistillRunConfig) -> tuple:
        assert c.priors is not None
        sampling = c.priors.model_dump(exclude={"methods", "fuse", "weights"})
        # the transfer set decides a self-trained teacher, and so whose priors these are
        transfer = c.transfer.model_dump() if c.transfer is not None else None
        return sampling, c.teacher.model_dump(), c.data.model_dump(), transfer

    if any(shared_part(c) != shared_part(first) for c in with_priors):
        return None
    order = list(PriorMethod.__args__)
    methods = sorted({m for c in with_priors for m in c.priors.methods}, key=order.index)  # type: ignore[union-attr]
    return first.model_copy(update={"priors": first.priors.model_copy(update={"methods": methods})})


def prime_prior_store(cfgs: list[DistillRunConfig]) -> dict | None:
    """Compute (or find in the store) every prior the variants ``cfgs`` need in one pass through one cached
    teacher, before any of them runs; returns the cost per method, or None when they share no store."""
    for cfg in cfgs:  # every variant's config error before any teacher or prior work
        _check_self_train(cfg)
    union = shared_priors_config(cfgs)
    if union is None:
        return None
    assert union.priors is not None
    console.rule("[bold]priors of every variant: " + ", ".join(union.priors.methods))
    bundle = load_data(union.data)
    run_dir = Path(union.output_dir)
    transfer = load_transfer_set(union.transfer, bundle, union.data.path) if union.transfer else None
    teacher, _ = _distillation_teacher(union, bundle, transfer, run_dir)
    _, cost = compute_method_priors(union, teacher, bundle, run_dir)
    return cost


def fuse_priors(cfg: DistillRunConfig, per_method: dict[str, list]) -> list:
    from rationalign.attribution.hybrid import fuse

    assert cfg.priors is not None
    lists = list(per_method.values())
    return lists[0] if len(lists) == 1 else fuse(lists, how=cfg.priors.fuse, weights=cfg.priors.weights)


def write_heatmap_examples(
    path: Path, model_dir: Path, subset: IntentDataset, per_method: dict[str, list], fused: list, n: int = 8
) -> None:
    """Student vs teacher vs prior word scores for the report: the first ``n`` evaluated utterances and the
    ``n`` most confident mistakes. The teacher row is CAP when computed (the class-aware rationale), else
    the first method; the prior row is what the student was aligned to. All explain the gold label."""
    from rationalign.attribution.gradient import GradientXInput
    from rationalign.models.classifier import IntentClassifier

    student = IntentClassifier.load(model_dir)
    gold = subset.label_ids(student.label_space)
    probs = student.predict_proba(subset.texts)
    predicted = probs.argmax(1)
    wrong = sorted((i for i in range(len(subset)) if predicted[i] != gold[i]), key=lambda i: -probs[i].max())
    chosen = [(i, "sampled") for i in range(min(n, len(subset)))] + [(i, "worst") for i in wrong[:n]]
    if not chosen:
        return
    explained = GradientXInput(student).attribute(
        [subset[i].text for i, _ in chosen], [gold[i] for i, _ in chosen]
    )
    teacher_method = "cap" if "cap" in per_method else next(iter(per_method))
    lines = []
    for (i, kind), attr in zip(chosen, explained, strict=True):
        record = {
            "text": subset[i].text,
            "kind": kind,
            "words": list(attr.words),
            "student": [float(x) for x in attr.scores],
            "label": subset[i].label,
            "predicted": student.label_space.name(int(predicted[i])),
        }
        if list(per_method[teacher_method][i].words) == list(attr.words):
            record["teacher"] = [float(x) for x in per_method[teacher_method][i].scores]
            record["prior"] = [float(x) for x in fused[i].scores]
        lines.append(json.dumps(record))
    atomic_write_text(path, "\n".join(lines) + "\n")


def distill_run(cfg: DistillRunConfig, progress: bool = True) -> DistillResult:
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_text = dump_yaml(cfg)
    previous = run_dir / CONFIG_FILE
    resume = previous.is_file() and previous.read_text(encoding="utf-8") == config_text
    (run_dir / CONFIG_FILE).write_text(config_text, encoding="utf-8")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    if cfg.transfer is not None and cfg.distill.alpha <= 0:
        raise ConfigError(
            "distill config: transfer needs the teacher's soft labels; fix: set distill.alpha > 0 "
            "(and a teacher), or drop transfer"
        )
    _check_self_train(cfg)
    bundle = load_data(cfg.data)
    transfer = None
    if cfg.transfer is not None:
        transfer = load_transfer_set(cfg.transfer, bundle, cfg.data.path)
    teacher, self_training = None, []
    if cfg.distill.alpha > 0 or cfg.priors is not None:
        teacher, self_training = _distillation_teacher(cfg, bundle, transfer, run_dir)
    timings["teacher"] = time.perf_counter() - t0

    soft = None
    if teacher is not None and cfg.distill.alpha > 0:
        stamp = hashlib.sha256((teacher.fingerprint + bundle.fingerprint).encode()).hexdigest()

        def label_train() -> np.ndarray:
            console.rule("[bold]soft labels")
            return np.asarray(teacher.predict_proba(bundle.train.texts), dtype=np.float32)

        soft = _cached_array(run_dir, "soft_labels", stamp, label_train)
    timings["soft_labels"] = time.perf_counter() - t0 - sum(timings.values())

    if transfer is not None:
        console.rule("[bold]transfer set")
        transfer_soft = _transfer_soft_labels(cfg, teacher, transfer, run_dir)
    timings["transfer"] = time.perf_counter() - t0 - sum(timings.values())

    priors, prior_cost = None, {}
    if cfg.priors is not None:
        console.rule("[bold]priors: " + ", ".join(cfg.priors.methods))
        attributions, prior_cost = compute_run_priors(cfg, teacher, bundle, run_dir)
        priors = [a.scores for a in attributions]
    timings["priors"] = time.perf_counter() - t0 - sum(timings.values())

    console.rule("[bold]student")
    sc = cfg.student
    student = new_classifier(sc, bundle.label_space)
    train_set, labelled = bundle.train, None
    if transfer is not None:
        assert soft is not None
        # transfer rows carry the teacher's top label only for the trainer's bookkeeping (and the
        # prototype head's class means); the objective gives them no cross-entropy
        guesses = [bundle.label_space.name(int(i)) for i in transfer_soft.argmax(1)]
        extra = [
            Example(t, y, source=str(transfer.source)) for t, y in zip(transfer.texts, guesses, strict=True)
        ]
        train_set = IntentDataset(bundle.train.examples + extra, f"{bundle.train.name}+transfer")
        labelled = np.arange(len(train_set)) < len(bundle.train)
        soft = np.concatenate([soft, transfer_soft])
        if priors is not None:
            priors = [*priors, *([None] * len(extra))]
    objective = DistillationObjective(cfg.distill, soft_labels=soft, priors=priors, labelled=labelled)
    trained = Trainer(
        student, train_set, bundle.valid, sc, run_dir, objective=objective, progress=progress
    ).fit(resume=resume)
    timings["student"] = time.perf_counter() - t0 - sum(timings.values())

    console.rule("[bold]evaluation")
    metrics: dict[str, Any] = {
        "best_valid_accuracy": trained.best_valid_accuracy,
        "best_epoch": trained.best_epoch,
        "train_seconds": trained.wall_seconds
        if trained.trained_now
        else _previous_metric(run_dir, "train_seconds"),
        "train_examples_per_second": trained.train_examples_per_second,
    }
    if bundle.test is not None:
        report = evaluate_classifier(student, bundle.test)
        metrics.update(test_accuracy=report.accuracy, test_macro_f1=report.macro_f1)
        (run_dir / "test_metrics.json").write_text(
            json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8"
        )
        if cfg.evaluation.suite:
            metrics.update(_suite_metrics(cfg, trained.model_dir, run_dir, teacher, bundle))
    timings["evaluation"] = time.perf_counter() - t0 - sum(timings.values())

    manifest = {
        "kind": "distill",
        "rationalign_version": __version__,
        "git_commit": git_commit(),
        "started_at": started_at,
        "wall_seconds": time.perf_counter() - t0,
        "stage_seconds": timings,
        "config": cfg.model_dump(mode="json"),
        "data": {
            "path": str(cfg.data.path),
            "fingerprint": bundle.fingerprint,
            "train_examples": len(bundle.train),
            "labels": len(bundle.label_space),
            "transfer": transfer.summary() if transfer is not None else None,
        },
        "teacher": {
            "spec": cfg.teacher.spec,
            "fingerprint": getattr(teacher, "fingerprint", None),
            "self_training": self_training,
        },
        "priors": {
            "methods": cfg.priors.methods if cfg.priors else [],
            "cost": prior_cost,
            "fingerprint": _priors_fingerprint(priors),
        },
        "model": {
            "base": sc.model,
            "base_hash": student.base_model_hash(),
            "parameters": student.num_parameters(),
            "pooling": student.pooling,
            "weights_sha256": student.weights_fingerprint(),
            "dir": str(trained.model_dir),
        },
        "history": [h.__dict__ for h in trained.history],
        "metrics": metrics,
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=1, default=str) + "\n")
    return DistillResult(run_dir, trained.model_dir, manifest)


def _cached_array(run_dir: Path, name: str, stamp: str, compute) -> np.ndarray:
    """``<run_dir>/<name>.npy`` when its ``.key`` file holds ``stamp``, else ``compute()``, saved so."""
    cache, key = run_dir / f"{name}.npy", run_dir / f"{name}.key"
    if cache.is_file() and key.is_file() and key.read_text() == stamp:
        return np.load(cache, allow_pickle=False)
    array = compute()
    np.save(cache, array, allow_pickle=False)
    key.write_text(stamp)
    return array


def _transfer_soft_labels(cfg: DistillRunConfig, teacher, transfer: TransferSet, run_dir: Path) -> np.ndarray:
    """The teacher's probabilities of the transfer texts: from a shared store when one is configured (the
    other seeds and variants then read them, and a killed run keeps every chunk it scored), else from this
    run's own cache."""
    from rich.progress import Progress

    from rationalign.attribution.store import PriorStore
    from rationalign.teachers.cache import CachedTeacher

    assert cfg.transfer is not None
    texts = transfer.texts

    def score(scorer) -> np.ndarray:
        chunk, parts = 512, []
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("teacher labels the transfer set", total=len(texts))
            for start in range(0, len(texts), chunk):
                parts.append(np.asarray(scorer.predict_proba(texts[start : start + chunk]), dtype=np.float32))
                bar.advance(task, len(parts[-1]))
        return np.concatenate(parts)

    store = cfg.transfer.store or (cfg.priors.store if cfg.priors is not None else None)
    if store:
        cached = CachedTeacher(teacher, store=PriorStore(store))
        probs = score(cached)
        console.print(f"transfer set: {len(texts)} texts, {cached.misses} scored by the teacher")
        return probs
    stamp = hashlib.sha256("\n".join([teacher.fingerprint, *texts]).encode()).hexdigest()
    return _cached_array(run_dir, "transfer_soft_labels", stamp, lambda: score(teacher))


def _priors_fingerprint(priors: list | None) -> str | None:
    if priors is None:
        return None
    h = hashlib.sha256()
    for p in priors:
        h.update(np.asarray(p, dtype=np.float32).tobytes())
    return h.hexdigest()


def _suite_metrics(
    cfg: DistillRunConfig, model_dir: Path, run_dir: Path, teacher, bundle: DataBundle
) -> dict[str, Any]:
    """Run the evaluation suite on test; fidelity uses the teacher's (fused) rationale on the same texts."""
    from rationalign.evaluation.suite import evaluate_suite

    limit = cfg.evaluation.limit
    teacher_priors = None
    if cfg.priors is not None and teacher is not None and bundle.test is not None:
        subset = bundle.test.subset(range(min(limit or len(bundle.test), len(bundle.test))), name="test-head")
        per_method, _ = compute_method_priors(cfg, teacher, bundle, run_dir, dataset=subset)
        fused = fuse_priors(cfg, per_method)
        teacher_priors = {a_text: a for a_text, a in zip(subset.texts, fused, strict=True)}
        write_heatmap_examples(run_dir / "attributions.jsonl", model_dir, subset, per_method, fused)
    attack = cfg.evaluation.attack_set
    if attack is None and cfg.evaluation.attack_limit and bundle.test is not None:
        attack = build_attack_set(bundle, run_dir / "adversarial.jsonl", cfg.evaluation.attack_limit)
    result = evaluate_suite(
        model_dir,
        bundle,
        attack_set=attack,
        teacher_priors=teacher_priors,
        limit=limit,
        store_calibration=cfg.evaluation.store_calibration,
    )
    result.save(run_dir / "suite.json")
    return {"suite": result.metrics}


def build_attack_set(bundle: DataBundle, path: Path, limit: int) -> Path:
    """WordNet-synonym and confusable-keyword swaps of the first ``limit`` test utterances (keywords by PMI
    on the training split), saved once as ``path`` (the report shows them)."""
    if path.is_file():
        return path
    from rationalign.evaluation.adversarial import generate_attack_set
    from rationalign.evaluation.commands import build_generators

    assert bundle.test is not None
    generators = build_generators(bundle.train, ["synonym", "confusable"])
    return generate_attack_set(bundle.test, generators, 1, seed=0, limit=limit).save(path)


def _previous_metric(run_dir: Path, name: str) -> Any:
    """A metric of this run directory's last manifest (a resumed, finished run keeps its training time)."""
    path = run_dir / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("metrics", {}).get(name)
