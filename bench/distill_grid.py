"""The results table of explanation-aligned distillation (issue: CE, +KD, +IG, +LIME, +CAP, +CAP-Hybrid).

Each variant is the committed config ``examples/distill/<dataset>_<setting>.yaml`` with a few overrides
(printed in the row's command). All variants of one config share the trained teacher (``teacher.dir``)
and the prior store (``priors.store``), so the teacher is trained and each prior computed once. Seeds vary
the student (head initialisation, dropout, data order) on the shipped split; the teacher and priors stay.
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
from rationalign.pipeline import DistillRunConfig, distill_run
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


def markdown() -> None:
    """BENCHMARKS.md's tables: one per (dataset, setting), variants in VARIANTS order."""
    rows = [Row(**r) for r in read_results("distill")]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print BENCHMARKS.md's tables and exit")
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
        "--tag",
        help="names the --set overrides in the table's setting and the run folders (e.g. 'patience 15'), "
        "so a schedule study never overwrites the committed config's runs",
    )
    args = parser.parse_args()
    if args.markdown:
        markdown()
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
        for variant in args.variants:
            per_seed: list[dict[str, float]] = []
            commands = []
            for seed in args.seeds:
                out = run_directory(dataset, setting, variant, seed)
                overrides = [*VARIANTS[variant], *args.sets, f"student.seed={seed}"]
                sets = [*overrides, f"output_dir={out}"]
                cfg = build(DistillRunConfig, apply_overrides(base, sets), config_path)
                manifest = finished_manifest(cfg) if args.reuse else None
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


if __name__ == "__main__":
    main()
