"""``rationalign attack`` (build an adversarial set) and ``rationalign suite`` (every metric, one JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rationalign.errors import ConfigError, DataError

GENERATOR_NAMES = ("synonym", "confusable", "llm")


def _split_names(value: str) -> list[str]:
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in GENERATOR_NAMES]
    if unknown or not names:
        raise ConfigError(
            f"unknown generator(s) {unknown or value!r}; fix: choose from {', '.join(GENERATOR_NAMES)}"
        )
    return list(dict.fromkeys(names))


def build_generators(
    train: Any,
    names: list[str],
    *,
    reference: Any | None = None,
    reference_valid: Any | None = None,
    encoder: str | None = "minilm-l6",
    llm: str | None = None,
    top_k: int = 10,
    swaps: int = 1,
) -> list[Any]:
    """The generators named, with keywords from ``train`` (PMI), confusable classes from ``reference`` on
    ``reference_valid`` (soft confusion) or from PMI vectors, and MiniLM sentence similarity.
    ``swaps``: how many label-carrying words one synonym candidate replaces at once (among the top
    ``swaps + 1``), a harder attack that must still pass the same similarity threshold."""
    if swaps < 1:
        raise ConfigError(f"--swaps must be >= 1, got {swaps}")
    from rationalign.evaluation import adversarial as adv
    from rationalign.evaluation import keywords as kw

    stats = kw.pmi_stats(train)
    table = kw.pmi_keywords(stats, top_k=top_k)
    similarity = adv.SimilarityValidator(adv.SentenceEncoder(encoder)) if encoder else None
    reference_validator = adv.ReferenceValidator.from_model(reference) if reference is not None else None
    out: list[Any] = []
    for name in names:
        if name == "synonym":
            out.append(adv.SynonymSwap(keywords=table, validator=similarity, swaps=swaps))
        elif name == "confusable":
            if reference is not None and reference_valid is not None:
                probs = reference.predict_proba(reference_valid.texts)
                confusable = kw.confusable_from_probs(
                    probs, reference_valid.label_ids(reference.label_space), reference.label_space
                )
            else:
                confusable = kw.confusable_from_keywords(stats)
            out.append(
                adv.ConfusableKeywordSwap(
                    stats=stats,
                    keywords=table,
                    confusable=confusable,
                    reference=reference_validator,
                    similarity=similarity,
                    wordnet=adv.load_wordnet(),
                )
            )
        elif name == "llm":
            if llm is None:
                raise ConfigError(
                    "generator 'llm' needs a text generator; fix: pass --llm smollm2-135m (or a folder)"
                )
            out.append(
                adv.LLMRewrite(
                    adv.TransformersGenerator(llm),
                    keywords=table,
                    validator=reference_validator or similarity,
                )
            )
    return out


def _print_stats(console: Console, attack: Any) -> None:
    table = Table(title=f"attack set: {len(attack)} examples from {attack.dataset}")
    for column in (
        "generator",
        "threshold",
        "sources",
        "with candidate",
        "candidates",
        "passed",
        "pass rate",
    ):
        table.add_column(column, justify="right" if column != "generator" else "left")
    for s in attack.stats.values():
        table.add_row(
            s.name,
            f"{s.min_validity:.2f}",
            str(s.n_source),
            str(s.n_with_candidate),
            str(s.n_candidates),
            str(s.n_passed),
            f"{s.pass_rate:.1%}",
        )
    console.print(table)


def _metric_rows(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("clean accuracy", metrics["clean"]["accuracy"]),
        ("clean macro-F1", metrics["clean"]["macro_f1"]),
    ]
    for name, values in metrics.get("adversarial", {}).items():
        if isinstance(values, dict) and "accuracy" in values:
            rows.append((f"adversarial accuracy [{name}] (n={values['n_examples']})", values["accuracy"]))
            rows.append((f"accuracy drop [{name}]", values["drop"]))
    faith = metrics.get("faithfulness", {})
    rows += [
        ("AOPC comprehensiveness", faith.get("aopc_comprehensiveness")),
        ("AOPC sufficiency", faith.get("aopc_sufficiency")),
        ("soft comprehensiveness", (faith.get("soft_comprehensiveness") or {}).get("mean")),
        ("soft sufficiency", (faith.get("soft_sufficiency") or {}).get("mean")),
    ]
    if "fidelity" in metrics:
        rows.append(("fidelity Spearman", metrics["fidelity"]["spearman"]["mean"]))
    for name, s in metrics.get("stability", {}).items():
        rows.append((f"stability Spearman [{name}]", s["spearman"]["mean"]))
    cal = metrics.get("calibration", {})
    rows.append(("ECE (T=1)", cal.get("before", {}).get("ece")))
    if cal.get("after"):
        rows.append((f"ECE (T={cal['temperature']:.3f}, fitted on valid)", cal["after"]["ece"]))
    cf = metrics.get("counterfactual", {})
    rows += [
        ("counterfactual removal flips", cf.get("removal_pass_rate")),
        ("rationale alone keeps", cf.get("rationale_only_pass_rate")),
    ]
    if "ood" in metrics:
        rows += [
            ("OOS AUROC (MSP)", metrics["ood"]["msp"]["auroc"]),
            ("OOS AUROC (energy)", metrics["ood"]["energy"]["auroc"]),
        ]
        rows.append(("OOS FPR@95TPR (MSP)", metrics["ood"]["msp"]["fpr_at_95_tpr"]))
    return rows


def register(app: typer.Typer) -> None:
    """Add ``attack`` and ``suite`` to the ``rationalign`` app."""

    @app.command()
    def attack(
        data: Annotated[
            str, typer.Argument(help="Data folder or dataset name (banking77, hwu64, clinc150).")
        ],
        out: Annotated[Path, typer.Option(help="Where to write the attack set (JSONL).")],
        split: Annotated[str, typer.Option(help="Split to attack.")] = "test",
        generators: Annotated[
            str, typer.Option(help="Comma-separated: synonym, confusable, llm.")
        ] = "synonym,confusable",
        n_per_example: Annotated[
            int, typer.Option(help="Adversarial examples per utterance and generator.")
        ] = 1,
        swaps: Annotated[
            int,
            typer.Option(help="Words the synonym generator replaces in one candidate (2 = a harder attack)."),
        ] = 1,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        limit: Annotated[int | None, typer.Option(help="Attack only the first N utterances.")] = None,
        reference: Annotated[
            Path | None,
            typer.Option(help="Reference model (teacher) folder: confusable classes and validity."),
        ] = None,
        encoder: Annotated[
            str, typer.Option(help="Sentence encoder for similarity ('none' to skip).")
        ] = "minilm-l6",
        llm: Annotated[
            str | None, typer.Option(help="Causal LM for the 'llm' generator, e.g. smollm2-135m.")
        ] = None,
        min_validity: Annotated[
            float | None, typer.Option(help="Override every generator's validity threshold.")
        ] = None,
        include_rejected: Annotated[
            bool, typer.Option(help="Also store candidates below the threshold.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
    ) -> None:
        """Build an adversarial keyword-substitution set from a split (keywords from the train split)."""
        from rationalign.data.io import DataConfig, load_data
        from rationalign.evaluation.adversarial import generate_attack_set

        names = _split_names(generators)
        if n_per_example < 1:
            raise ConfigError(f"--n-per-example must be >= 1, got {n_per_example}")
        bundle = load_data(
            DataConfig(path=data, test_split=split if split not in ("train", "valid") else "test")
        )
        target = {"train": bundle.train, "valid": bundle.valid}.get(split, bundle.test)
        if target is None or len(target) == 0:
            raise DataError(
                f"{data}: no {split!r} split to attack; fix: choose an existing split with --split"
            )
        ref = None
        if reference is not None:
            from rationalign.models.classifier import IntentClassifier

            ref = IntentClassifier.load(reference)
        gens = build_generators(
            bundle.train,
            names,
            reference=ref,
            reference_valid=bundle.valid,
            encoder=None if encoder.lower() == "none" else encoder,
            llm=llm,
            swaps=swaps,
        )
        result = generate_attack_set(
            target, gens, n_per_example, seed, min_validity=min_validity, limit=limit
        )
        if len(result) == 0:
            raise DataError(
                f"{data}/{split}: no adversarial example passed the validity check; fix: attack more utterances "
                "or lower --min-validity"
            )
        result.save(out, include_rejected=include_rejected)
        if as_json:
            print(
                json.dumps(
                    {
                        "out": str(out),
                        "n_examples": len(result),
                        "stats": {k: v.to_dict() for k, v in result.stats.items()},
                    }
                )
            )
            return
        _print_stats(Console(), result)
        Console().print(f"[green]wrote {out}[/green]")

    @app.command()
    def suite(
        model: Annotated[Path, typer.Argument(help="Model folder written by `rationalign train`.")],
        data: Annotated[str, typer.Option(help="Data folder, file or dataset name.")],
        split: Annotated[str, typer.Option(help="Evaluated split.")] = "test",
        attack_set: Annotated[
            list[Path] | None,
            typer.Option(
                "--attack",
                help="Attack set (JSONL) from `rationalign attack`; repeat to merge several (worst case "
                "over all their variants).",
            ),
        ] = None,
        priors: Annotated[
            Path | None, typer.Option(help="Teacher priors: prior store (.sqlite) or its JSONL export.")
        ] = None,
        prior_method: Annotated[
            str | None, typer.Option(help="Which prior method of the store to use.")
        ] = None,
        out: Annotated[Path | None, typer.Option(help="Metrics JSON (records go next to it).")] = None,
        records: Annotated[Path | None, typer.Option(help="Per-example records (JSONL).")] = None,
        calibrate: Annotated[
            bool, typer.Option("--calibrate/--no-calibrate", help="Fit a temperature on valid.")
        ] = True,
        store_calibration: Annotated[
            bool, typer.Option(help="Save the temperature and abstain threshold into the model folder.")
        ] = False,
        attribution: Annotated[str, typer.Option(help="Student attribution: gxi or ig.")] = "gxi",
        limit: Annotated[
            int | None, typer.Option(help="Explanation metrics on the first N utterances.")
        ] = None,
        stability: Annotated[
            bool, typer.Option("--stability/--no-stability", help="Run the stability metric.")
        ] = True,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the metrics JSON.")] = False,
    ) -> None:
        """Every metric of a model on one split: accuracy, adversarial, faithfulness, fidelity, stability,
        calibration, counterfactual, out-of-scope."""
        from rationalign.evaluation.suite import evaluate_suite

        if attribution not in ("gxi", "ig"):
            raise ConfigError(f"unknown --attribution {attribution!r}; fix: use gxi or ig")
        attack: Any = None
        if attack_set:
            from rationalign.evaluation.adversarial import AttackSet

            attack = (
                attack_set[0]
                if len(attack_set) == 1
                else AttackSet.merge([AttackSet.load(path) for path in attack_set])
            )
        result = evaluate_suite(
            model,
            data,
            split=split,
            attack_set=attack,
            teacher_priors=priors,
            prior_method=prior_method,
            attribution=attribution,  # type: ignore[arg-type]
            calibrate=calibrate,
            store_calibration=store_calibration,
            limit=limit,
            stability=stability,
            seed=seed,
        )
        written = result.save(out, records) if out is not None else None
        if as_json:
            print(json.dumps(result.to_dict()))
            return
        console = Console()
        table = Table(
            title=f"{model} on {result.data['name']}/{split} ({result.data['n_examples']} utterances)"
        )
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in _metric_rows(result.metrics):
            table.add_row(name, "-" if value is None else f"{value:.4f}")
        console.print(table)
        if written:
            console.print(f"[green]wrote {written[0]} and {written[1]}[/green]")
