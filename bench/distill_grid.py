"""The results table of explanation-aligned distillation (issue: CE, +KD, +IG, +LIME, +CAP, +CAP-Hybrid).

Each variant is the committed config ``examples/distill/<dataset>_<setting>.yaml`` with a few overrides
(printed in the row's command). All variants of one config share the trained teacher (``teacher.dir``)
and the prior store (``priors.store``), so the teacher is trained and each prior computed once: before the
first run, the union of the priors the variants still need is computed in one pass through one cached
teacher, so LIME reuses CAP's scores of the same masks. Seeds vary the student (head initialisation,
dropout, data order) on the shipped split; the teacher and priors stay.
Hyper-parameters come from the config (chosen on validation); test numbers are read once per run.

    .venv/bin/python bench/distill_grid.py --configs examples/distill/banking77_10shot.yaml --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from datetime import date
from pathlib import Path

import pydantic
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, Row, format_cell, machine_info, read_results, write_results
from rationalign.config import apply_overrides, build, dump_yaml, load_yaml
from rationalign.pipeline import DistillRunConfig, distill_run, prime_prior_store, trained_teacher_dir
from rationalign.training.run import CONFIG_FILE, MANIFEST

VARIANTS: dict[str, list[str]] = {
    "CE": ["priors=null", "distill.alpha=0"],
    "CE + KD": ["priors=null"],
    "+ IG prior": ["priors.methods=[ig]"],
    "+ LIME prior": ["priors.methods=[lime]"],
    "+ CAP": ["priors.methods=[cap]"],
    "+ CAP-Hybrid (mean)": ["priors.fuse=mean"],
    "+ CAP-Hybrid (max)": ["priors.fuse=max"],
    # the 1.5x step budget (bench/align_cost.py): align a random half of each batch
    "+ CAP-Hybrid (mean), align_fraction 0.5": ["priors.fuse=mean", "distill.align_fraction=0.5"],
    # the budget in either precision: align whole batches on one step in 2 (1.5x in bfloat16) or 3
    "+ CAP-Hybrid (mean), align_every 2": ["priors.fuse=mean", "distill.align_every=2"],
    "+ CAP-Hybrid (mean), align_every 3": ["priors.fuse=mean", "distill.align_every=3"],
}


def dataset_and_setting(config: dict) -> tuple[str, str]:
    """``("banking77", "10-shot")`` for a distill config (a smaller student is named in the setting)."""
    dataset = config["data"]["path"]
    split = config["data"].get("train_split", "train")
    setting = "full" if split == "train" else f"{split.split('_')[1]}-shot"
    layers = (config.get("student") or {}).get("num_layers")
    if layers:
        setting += f", {layers}-layer student"
    return dataset, setting


def run_directory(dataset: str, setting: str, variant: str, seed: int) -> Path:
    """Where the grid puts one (variant, seed) run: ``runs/distill/banking77-10-shot-cap-s0``."""
    slug = variant.strip("+ ").lower().replace(" ", "-").replace("(", "").replace(")", "")
    name = f"{dataset}-{setting}-{slug}-s{seed}".replace(", ", "-").replace(" ", "-")
    return REPO_ROOT / "runs" / "distill" / name


def variant_config(
    base: dict, config_path: str, dataset: str, setting: str, variant: str, seed: int, sets: list[str]
) -> tuple[DistillRunConfig, list[str], Path]:
    """One (variant, seed) run of a committed config: its config, the overrides a user types, its folder."""
    out = run_directory(dataset, setting, variant, seed)
    overrides = [*VARIANTS[variant], *sets, f"student.seed={seed}"]
    cfg = build(DistillRunConfig, apply_overrides(base, [*overrides, f"output_dir={out}"]), config_path)
    return cfg, overrides, out


def finished_manifest(cfg: DistillRunConfig) -> dict | None:
    """The manifest of a finished run of exactly this config in its output folder, else None."""
    run_dir = Path(cfg.output_dir)
    config_file, manifest_file = run_dir / CONFIG_FILE, run_dir / MANIFEST
    if not (config_file.is_file() and manifest_file.is_file()):
        return None
    # The same experiment, wherever the checkout lives: a run made from a worktree records its own absolute
    # output_dir, which is this very folder. The saved config is read through the schema, so a field added
    # since (with its default) still matches.
    try:
        saved = DistillRunConfig.model_validate(yaml.safe_load(config_file.read_text(encoding="utf-8")))
    except pydantic.ValidationError:
        return None  # a config of a schema this checkout no longer reads: not the same experiment
    saved = yaml.safe_load(dump_yaml(saved))
    wanted = yaml.safe_load(dump_yaml(cfg))
    saved.pop("output_dir", None)
    wanted.pop("output_dir", None)
    if saved != wanted:
        return None
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    return manifest if "test_accuracy" in manifest.get("metrics", {}) else None


def headline(manifest: dict) -> dict[str, float]:
    """The table's columns (percent where the metric is a rate) from a distill run's manifest."""
    m = manifest["metrics"]
    suite = m.get("suite", {})
    out = {"clean_accuracy": 100 * m["test_accuracy"], "train_seconds": m["train_seconds"]}
    if m.get("best_valid_accuracy") is not None:  # what a schedule or lambda is chosen on, never test
        out["valid_accuracy"] = 100 * m["best_valid_accuracy"]
    if m.get("train_examples_per_second"):  # per-epoch cost, free of how many epochs early stopping ran
        out["train_examples_per_second"] = m["train_examples_per_second"]
    adv = suite.get("adversarial", {}).get("all")
    if adv and adv.get("n_examples"):
        out["adversarial_accuracy"] = 100 * adv["accuracy"]
        out["adversarial_drop"] = 100 * adv["drop"]
    worst = suite.get("adversarial", {}).get("worst_case")
    if worst and worst.get("n_sources"):  # in the results file; bench/robustness.py has the k-candidate table
        out["worst_case_accuracy"] = 100 * worst["accuracy"]
    faith = suite.get("faithfulness")
    if faith:
        out["comprehensiveness_aopc"] = 100 * faith["aopc_comprehensiveness"]
        out["sufficiency_aopc"] = 100 * faith["aopc_sufficiency"]
    fid = suite.get("fidelity")
    if fid and fid.get("spearman") is not None:
        value = fid["spearman"]["mean"] if isinstance(fid["spearman"], dict) else fid["spearman"]
        if value is not None and not math.isnan(value):
            out["fidelity_spearman"] = value
    cal = suite.get("calibration", {}).get("before")
    if cal:
        out["ece"] = 100 * cal["ece"]
    return out


COLUMNS = [
    ("valid_accuracy", "valid acc"),
    ("clean_accuracy", "clean acc"),
    ("adversarial_accuracy", "adversarial acc"),
    ("adversarial_drop", "drop"),
    ("comprehensiveness_aopc", "comprehensiveness AOPC ↑"),
    ("sufficiency_aopc", "sufficiency AOPC ↓"),
    ("fidelity_spearman", "fidelity to teacher (Spearman)"),
    ("ece", "ECE"),
    ("train_seconds", "train s"),
    ("train_examples_per_second", "train ex/s"),
]


def _rows(name: str) -> list[Row]:
    return [Row(**r) for r in read_results(name)]


def markdown() -> None:
    """BENCHMARKS.md's tables: one per (dataset, setting), variants in VARIANTS order."""
    rows = _rows("distill")
    cells = {(r.dataset, r.setting, r.method, r.metric): r for r in rows}
    for dataset, setting in dict.fromkeys((r.dataset, r.setting) for r in rows):
        variants = [v for v in VARIANTS if (dataset, setting, v, "clean_accuracy") in cells]
        seeds = max(cells[(dataset, setting, v, "clean_accuracy")].n_seeds for v in variants)
        spread = f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""
        print(f"**{dataset}, {setting}**{spread}\n")
        print("| variant | " + " | ".join(title for _, title in COLUMNS) + " |")
        print("|---|" + "---:|" * len(COLUMNS))
        for variant in variants:
            n = cells[(dataset, setting, variant, "clean_accuracy")].n_seeds
            values = []
            for metric, _ in COLUMNS:
                row = cells.get((dataset, setting, variant, metric))
                if row is None:
                    values.append("-")
                    continue
                digits = (
                    3
                    if metric == "fidelity_spearman"
                    else 0
                    if metric in ("train_seconds", "train_examples_per_second")
                    else 2
                )
                values.append(format_cell(row.value, row.std, row.n_seeds, digits))
            name = variant + (f" ({n} seed{'s' if n > 1 else ''})" if n < seeds else "")
            print(f"| {name} | " + " | ".join(values) + " |")
        print()


# The results table in one view: clean test accuracy per (dataset, setting) for every variant.
OVERVIEW_SETTINGS = [
    ("banking77", "10-shot"),
    ("hwu64", "10-shot"),
    ("clinc150", "10-shot"),
    ("banking77", "5-shot"),
    ("hwu64", "5-shot"),
    ("clinc150", "5-shot"),
    ("banking77", "full"),
    ("hwu64", "full"),
]
RECIPE_TAG = "lambda 0.3, patience 15"  # the override validation chose on HWU64 10-shot
# KD on the training split's utterances read without labels (few-shot settings only; see BENCHMARKS.md)
TRANSFER_TAG = "transfer set, 5 epochs"
# ... from a teacher self-trained on those utterances (teacher.self_train)
SELF_TRAIN_TAG = "self-trained teacher, transfer set, 5 epochs"
SELF_TRAIN_2_TAG = "self-trained teacher (2 rounds), transfer set, 5 epochs"  # teacher.self_train.rounds=2
SELF_TRAIN_2_RECIPE_TAG = f"{SELF_TRAIN_2_TAG}, {RECIPE_TAG}"
SELF_TRAIN_RECIPE_TAG = f"{SELF_TRAIN_TAG}, {RECIPE_TAG}"
# teacher.self_train.min_confidence=0.8, the threshold bench/self_train_threshold.py chose on HWU64 validation
SELF_TRAIN_PICK_TAG = (
    "self-trained teacher (min_confidence 0.8, chosen on validation), transfer set, 5 epochs"
)
SELF_TRAIN_PICK_RECIPE_TAG = f"{SELF_TRAIN_PICK_TAG}, {RECIPE_TAG}"
# Tagged runs the overview shows as rows of their own: (variant, tag); "teacher" is the tag's own teacher
TAGGED_ROWS = [
    ("+ CAP-Hybrid (mean)", RECIPE_TAG),
    ("CE + KD", TRANSFER_TAG),
    ("+ CAP-Hybrid (mean)", TRANSFER_TAG),
    ("teacher", SELF_TRAIN_TAG),
    ("CE + KD", SELF_TRAIN_TAG),
    ("+ CAP-Hybrid (mean)", SELF_TRAIN_RECIPE_TAG),
    ("teacher", SELF_TRAIN_2_TAG),
    ("CE + KD", SELF_TRAIN_2_TAG),
    ("+ CAP-Hybrid (mean)", SELF_TRAIN_2_TAG),
    ("+ CAP-Hybrid (mean)", SELF_TRAIN_2_RECIPE_TAG),
    ("teacher", SELF_TRAIN_PICK_TAG),
    ("CE + KD", SELF_TRAIN_PICK_TAG),
    ("+ CAP-Hybrid (mean)", SELF_TRAIN_PICK_RECIPE_TAG),
]
# Published, never measured here: CPFT (Zhang et al., 2021), as quoted in ../shared/design/method.md.
CPFT = {
    ("banking77", "10-shot"): 87.2,
    ("hwu64", "10-shot"): 87.1,
    ("clinc150", "10-shot"): 94.2,
    ("banking77", "5-shot"): 80.9,
    ("hwu64", "5-shot"): 82.0,
    ("clinc150", "5-shot"): 92.3,
}
BASELINES = {
    "tfidf+lr": "TF-IDF + LR (cheap baseline)",
    "minilm-frozen+lr": "frozen MiniLM + LR (cheap baseline)",
}


def overview() -> None:
    """One table: rows are the cheap baselines, the teacher, every variant and the recipe; columns are the
    (dataset, setting) pairs of the issue. A cell nobody has run says so."""
    cells = {(r.dataset, r.setting, r.method, r.metric): r for r in _rows("distill")}
    base = {(r.dataset, r.setting, r.method): r for r in _rows("baselines") if r.metric == "accuracy"}
    header = [f"{d} {s}" for d, s in OVERVIEW_SETTINGS]
    print("| clean test accuracy | " + " | ".join(header) + " |")
    print("|---|" + "---:|" * len(header))

    def line(name: str, lookup, applies=lambda key: True) -> None:
        values = []
        for key in OVERVIEW_SETTINGS:
            if not applies(key):
                values.append("-")
                continue
            row = lookup(key)
            values.append("not run" if row is None else format_cell(row.value, row.std, row.n_seeds, 2))
            if row is not None and row.n_seeds < 3:  # the header says seeds 0-2: mark fewer
                values[-1] += " (1 seed)" if row.n_seeds == 1 else f" ({row.n_seeds} seeds)"
        print(f"| {name} | " + " | ".join(values) + " |")

    for method, name in BASELINES.items():
        line(f"*{name}*", lambda key, m=method: base.get((*key, m)))
    # The teacher of a distill config (its manifest), else the one-seed MPNet run of bench/student_ce.py
    # that config names as its teacher (the full-data teachers were trained that way).
    ce = {
        (r.dataset, r.setting): r
        for r in _rows("student_ce")
        if r.method == "mpnet-base CE (bfloat16)" and r.metric == "accuracy" and r.n_seeds == 1
    }
    line(
        "*teacher (MPNet-base CE)*",
        lambda key: cells.get((*key, "teacher", "clean_accuracy")) or ce.get(key),
    )
    for variant in VARIANTS:
        if "align_fraction" in variant or "align_every" in variant:  # cost variants, not the table's
            continue
        line(variant, lambda key, v=variant: cells.get((*key, v, "clean_accuracy")))
    for variant, tag in TAGGED_ROWS:
        if not any(s.endswith(f", {tag}") and m == variant for (_, s, m, _) in cells):
            continue  # nobody ran it yet
        line(
            f"*{variant}, {tag}*" if variant == "teacher" else f"{variant}, {tag}",
            lambda key, v=variant, t=tag: cells.get((key[0], f"{key[1]}, {t}", v, "clean_accuracy")),
            # at full data the training split is labelled already: there is no transfer set to add (every
            # tag of a run on unlabelled text names its transfer set)
            applies=lambda key, t=tag: not (TRANSFER_TAG in t and key[1] == "full"),
        )
    published = [f"*{CPFT[key]}*" if key in CPFT else "-" for key in OVERVIEW_SETTINGS]
    print("| *CPFT (published)* | " + " | ".join(published) + " |")


def teacher_row(cfg: DistillRunConfig, dataset: str, setting: str, command: str, machine: str) -> Row | None:
    """The trained teacher's test accuracy (its own run manifest), so tables can show the bound."""
    if cfg.teacher.train is None or not cfg.teacher.dir:
        return None
    folder = trained_teacher_dir(cfg)  # a self-trained teacher's last round, else teacher.dir
    assert folder is not None
    path = folder / MANIFEST
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        return None
    accuracy = json.loads(path.read_text(encoding="utf-8"))["metrics"]["test_accuracy"]
    return Row(
        dataset,
        setting,
        "teacher",
        "clean_accuracy",
        round(100 * accuracy, 3),
        0.0,
        1,
        command,
        date.today().isoformat(),
        machine,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print BENCHMARKS.md's tables and exit")
    parser.add_argument("--overview", action="store_true", help="print the one-table overview and exit")
    parser.add_argument("--configs", nargs="+")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read (variant, seed) runs whose folder holds a finished run of the same config instead of "
        "re-running them, so seeds can be added to a table one invocation at a time",
    )
    parser.add_argument("--set", dest="sets", nargs="*", default=[], help="extra overrides for every run")
    parser.add_argument(
        "--rows-only",
        action="store_true",
        help="with --reuse: never train; a (variant, seed) without a finished run is skipped with a note",
    )
    parser.add_argument(
        "--tag",
        help="names the --set overrides in the table's setting and the run folders (e.g. 'patience 15'), "
        "so a schedule study never overwrites the committed config's runs",
    )
    args = parser.parse_args()
    if args.markdown:
        markdown()
        return
    if args.overview:
        overview()
        return
    if not args.configs:
        parser.error("--configs is required (or --markdown)")
    if args.sets and not args.tag:
        parser.error(
            "--set changes the committed config: name the change with --tag (e.g. --tag 'patience 15')"
        )
    machine = machine_info()
    for config_path in args.configs:
        base = load_yaml(config_path)
        dataset, setting = dataset_and_setting(base)
        if args.tag:
            setting += f", {args.tag}"

        # each (variant, seed): its config, the overrides a user types, its folder, and a finished run of it
        plan = {}
        for variant in args.variants:
            for seed in args.seeds:
                cfg, overrides, out = variant_config(
                    base, config_path, dataset, setting, variant, seed, args.sets
                )
                plan[variant, seed] = (
                    cfg,
                    overrides,
                    out,
                    finished_manifest(cfg) if args.reuse or args.rows_only else None,
                )
        if not args.rows_only:
            # every prior the runs still to do need, in one pass: LIME then reuses CAP's teacher scores
            cost = prime_prior_store([cfg for cfg, _, _, manifest in plan.values() if manifest is None])
            if cost is not None:
                print("priors:", json.dumps(cost), flush=True)
        for variant in args.variants:
            per_seed: list[dict[str, float]] = []
            commands = []
            for seed in args.seeds:
                cfg, overrides, out, manifest = plan[variant, seed]
                if manifest is None and args.rows_only:
                    print(f"{variant} {seed}: no finished run in {out}; skipped (--rows-only)", flush=True)
                    continue
                if manifest is None:
                    manifest = distill_run(cfg, progress=sys.stderr.isatty()).manifest
                per_seed.append(headline(manifest))
                # the command as a user types it in the repository root: the run folder relative to it
                shown = [*overrides, f"output_dir={out.relative_to(REPO_ROOT)}"]
                commands.append(
                    ".venv/bin/rationalign distill --config "
                    + shlex.quote(config_path)
                    + "".join(f" --set {shlex.quote(s)}" for s in shown)
                )
                print(variant, seed, per_seed[-1], flush=True)
            if not per_seed:
                continue
            rows = []
            for metric in per_seed[0]:
                values = [r[metric] for r in per_seed if metric in r]
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                rows.append(
                    Row(
                        dataset,
                        setting,
                        variant,
                        metric,
                        round(statistics.mean(values), 3),
                        round(std, 3),
                        len(values),
                        commands[0] if len(commands) == 1 else " ; ".join(commands),
                        date.today().isoformat(),
                        machine,
                    )
                )
            write_results("distill", rows)
        command = ".venv/bin/rationalign distill --config " + shlex.quote(config_path)
        if cfg.teacher.self_train is not None and commands:
            command = commands[0]  # a self-trained teacher is trained by the overrides' run itself
        teacher = teacher_row(cfg, dataset, setting, command, machine)
        if teacher is not None:
            write_results("distill", [teacher])


if __name__ == "__main__":
    main()
