"""The training loop.

Why our own loop rather than the HF Trainer: resume must reproduce an uninterrupted run bit for bit
(data order derived from (seed, epoch), RNG states restored, mid-epoch position skipped), checkpoints must
avoid pickle, and the alignment objective needs double back-propagation (``create_graph=True``) through a
loss hook that sees example indices. All three are a few lines here and awkward through the HF Trainer.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rationalign.data.types import IntentDataset
from rationalign.device import resolve_device
from rationalign.errors import ModelError
from rationalign.models.classifier import IntentClassifier
from rationalign.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from rationalign.training.config import TrainConfig
from rationalign.training.objectives import Batch, CrossEntropyObjective, Objective

MODEL_DIR = "model"
LOG_FILE = "train_log.jsonl"


@dataclass
class EpochLog:
    epoch: int
    step: int
    train_loss: float
    valid_accuracy: float | None
    lr: float
    seconds: float
    examples_per_second: float
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    model_dir: Path
    best_epoch: int
    best_valid_accuracy: float | None
    steps: int
    epochs_run: int
    stopped_early: bool
    # Training time of the whole run, summed over every resumed part (what an uninterrupted run takes,
    # less the work a kill threw away after the last checkpoint), so a resumed run reports its full cost.
    wall_seconds: float
    train_examples_per_second: float
    history: list[EpochLog]
    trained_now: bool = True  # False: a finished run was resumed and nothing was trained


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


class Trainer:
    """Fine-tunes an ``IntentClassifier`` on a training set, validating each epoch.

    ``run_dir`` receives ``checkpoint/`` (resumable state), ``model/`` (best model, HF layout) and
    ``train_log.jsonl``. ``fit(resume=True)`` continues from the last checkpoint.
    """

    def __init__(
        self,
        clf: IntentClassifier,
        train: IntentDataset,
        valid: IntentDataset | None,
        config: TrainConfig,
        run_dir: str | Path,
        objective: Objective | None = None,
        progress: bool = True,
    ):
        self.clf = clf
        self.train_set = train
        self.valid_set = valid
        self.config = config
        self.run_dir = Path(run_dir)
        self.objective = objective or CrossEntropyObjective(config.label_smoothing)
        self.progress = progress
        self._clock = (time.perf_counter(), 0.0)  # (when this process began training, wall time saved before)
        self.labels = torch.tensor(train.label_ids(clf.label_space), dtype=torch.long)
        self.valid_labels = np.array(valid.label_ids(clf.label_space)) if valid is not None else None
        self.steps_per_epoch = math.ceil(len(train) / config.batch_size)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch

    # ------------------------------------------------------------------ pieces
    def _optimizer(self) -> torch.optim.AdamW:
        cfg = self.config
        head, decay, no_decay = [], [], []
        for name, p in self.clf.model.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith(("classifier", "score")) and cfg.head_lr is not None:
                head.append(p)
            elif p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith("norm.weight"):
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
        ]
        if head:
            groups.append({"params": head, "weight_decay": cfg.weight_decay, "lr": cfg.head_lr})
        # fused=True: one kernel per parameter group instead of a Python loop over tensors. On this 2-core
        # CPU it cut the MiniLM-L6 optimizer step from ~250 ms to ~17 ms (a third of each training step);
        # it is deterministic, so exact resume still holds (tests/training/test_resume.py).
        return torch.optim.AdamW([g for g in groups if g["params"]], fused=True)

    def _epoch_order(self, epoch: int) -> list[int]:
        # Data order depends only on (seed, epoch): a resumed run sees exactly the same batches.
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        return torch.randperm(len(self.train_set), generator=gen).tolist()

    def _batch(self, indices: list[int], step: int) -> Batch:
        texts = [self.train_set[i].text for i in indices]
        enc = self.clf.encode(texts)
        idx = torch.tensor(indices, dtype=torch.long)
        return Batch(
            enc["input_ids"], enc["attention_mask"], self.labels[idx].to(self.clf.device), idx, texts, step
        )

    def evaluate_valid(self) -> float | None:
        if self.valid_set is None or len(self.valid_set) == 0:
            return None
        logits = self.clf.logits(self.valid_set.texts, self.config.eval_batch_size)
        return float((logits.argmax(-1).numpy() == self.valid_labels).mean())

    def init_head_from_prototypes(self) -> None:
        """Start the head as a nearest-class-mean classifier on the backbone's own sentence vectors.

        With few examples per class a random head wastes the first epochs (and the pretrained features)
        learning what a class centroid already says; centroids give the frozen-embedding baseline's
        accuracy at step 0, and fine-tuning goes on from there. Only mean-pooled encoders have a pooled
        vector that equals what the head reads, so other poolings keep the random head.
        """
        if self.clf.pooling != "mean" or not hasattr(self.clf.model, "backbone"):
            return
        model, head = self.clf.model, self.clf.model.classifier
        sums = torch.zeros(len(self.clf.label_space), head.in_features)
        counts = torch.zeros(len(self.clf.label_space))
        norms = []
        was_training = model.training
        model.eval()
        with torch.inference_mode(), self.clf.autocast():
            for start in range(0, len(self.train_set), self.config.eval_batch_size):
                rows = list(range(start, min(start + self.config.eval_batch_size, len(self.train_set))))
                enc = self.clf.encode([self.train_set[i].text for i in rows])
                hidden = model.backbone(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().cpu()
                norms.append(pooled.norm(dim=-1))
                sums.index_add_(0, self.labels[rows], pooled)
                counts.index_add_(0, self.labels[rows], torch.ones(len(rows)))
        model.train(was_training)
        centroids = sums / counts.clamp(min=1).unsqueeze(1)
        centroids = centroids / centroids.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        # logits = scale * cos(pooled, centroid) for a pooled vector of typical norm
        typical = torch.cat(norms).mean().clamp(min=1e-6)
        with torch.no_grad():
            head.weight.copy_(centroids * (self.config.prototype_scale / typical))
            head.bias.zero_()

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.clf.to(resolve_device(cfg.device))
        self.clf.precision = cfg.precision  # validation passes run as training does
        model = self.clf.model
        optimizer = self._optimizer()
        warmup = int(cfg.warmup_ratio * self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_warmup_decay(warmup, self.total_steps)
        )
        state = {
            "epoch": 0,
            "step_in_epoch": 0,
            "global_step": 0,
            "best_valid": None,
            "best_epoch": -1,
            "bad_epochs": 0,
            "history": [],
            "loss_sum": 0.0,
            "loss_count": 0,
            "parts_sum": {},
            "train_seconds": 0.0,
            "wall_seconds": 0.0,
            "examples_seen": 0,
            "done": False,
            "stopped_early": False,
        }
        torch.manual_seed(cfg.seed)
        ckpt = find_checkpoint(self.run_dir) if resume else None
        if ckpt is not None:
            saved = load_checkpoint(ckpt, model, optimizer, scheduler)
            # checkpoints written before wall time was saved hold only the loop time: the closest lower bound
            saved.setdefault("wall_seconds", saved.get("train_seconds", 0.0))
            state.update(saved)
            # A kill between an epoch's log line and its checkpoint would leave a line to be written again.
            log = "".join(json.dumps(h) + "\n" for h in state["history"])
            (self.run_dir / LOG_FILE).write_text(log, encoding="utf-8")
        else:
            (self.run_dir / LOG_FILE).unlink(missing_ok=True)
            if cfg.head_init == "prototype":
                self.init_head_from_prototypes()
        self._clock = (time.perf_counter(), state["wall_seconds"])
        trained_now = not state["done"]
        if not state["done"]:
            self._loop(state, optimizer, scheduler)
        wall = self._wall_so_far()
        model_dir = self.run_dir / MODEL_DIR
        if state["best_valid"] is None or not model_dir.exists():
            self.clf.save(model_dir)  # no validation set: the last weights are the model
        best = IntentClassifier.load(model_dir, device=self.clf.device)
        self.clf.model.load_state_dict(best.model.state_dict())
        self.clf.model.eval()
        history = [EpochLog(**h) for h in state["history"]]
        return TrainResult(
            model_dir=model_dir,
            best_epoch=state["best_epoch"],
            best_valid_accuracy=state["best_valid"],
            steps=state["global_step"],
            epochs_run=len(history),
            stopped_early=state["stopped_early"],
            wall_seconds=wall,
            train_examples_per_second=state["examples_seen"] / max(state["train_seconds"], 1e-9),
            history=history,
            trained_now=trained_now,
        )

    def _wall_so_far(self) -> float:
        started, before = self._clock
        return before + time.perf_counter() - started

    def _checkpoint(self, state: dict, optimizer: torch.optim.Optimizer, scheduler) -> None:
        state["wall_seconds"] = self._wall_so_far()
        save_checkpoint(self.run_dir, self.clf.model, optimizer, scheduler, state)

    def _loop(self, state: dict, optimizer: torch.optim.Optimizer, scheduler) -> None:
        cfg, model = self.config, self.clf.model
        columns = [
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, disable=not self.progress, transient=False) as bar:
            task = bar.add_task(
                "train",
                total=self.total_steps,
                completed=state["global_step"],
                epoch=state["epoch"] + 1,
                loss=0.0,
            )
            while not state["done"]:
                epoch = state["epoch"]
                order = self._epoch_order(epoch)
                model.train()
                epoch_start = time.perf_counter()
                for b in range(state["step_in_epoch"], self.steps_per_epoch):
                    indices = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    batch = self._batch(indices, state["global_step"])
                    with self.clf.autocast():  # forward (and loss) only; backward follows autocast's casts
                        out = self.objective(self.clf, batch)
                    optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    if not (torch.isfinite(out.loss.detach()) and torch.isfinite(grad_norm)):
                        # stop before the optimizer writes NaN into every weight (and the checkpoint)
                        parts = ", ".join(f"{k}={v:.4g}" for k, v in out.parts.items())
                        raise ModelError(
                            f"non-finite loss or gradient at step {state['global_step'] + 1} (epoch "
                            f"{epoch + 1}; loss parts: {parts}); the weights were not updated; fix: check "
                            "the priors and soft labels for NaN, lower the learning rate, or train in float32"
                        )
                    optimizer.step()
                    scheduler.step()
                    state["global_step"] += 1
                    state["step_in_epoch"] = b + 1
                    state["loss_sum"] += float(out.loss.detach())
                    state["loss_count"] += 1
                    for k, v in out.parts.items():
                        state["parts_sum"][k] = state["parts_sum"].get(k, 0.0) + v
                    state["examples_seen"] += len(indices)
                    bar.update(task, advance=1, epoch=epoch + 1, loss=state["loss_sum"] / state["loss_count"])
                    if state["global_step"] >= self.total_steps:
                        break
                    if (
                        state["global_step"] % cfg.checkpoint_every == 0
                        and state["step_in_epoch"] < self.steps_per_epoch
                    ):
                        state["train_seconds"] += time.perf_counter() - epoch_start
                        epoch_start = time.perf_counter()
                        self._checkpoint(state, optimizer, scheduler)
                state["train_seconds"] += time.perf_counter() - epoch_start
                self._end_epoch(state, optimizer)
                self._checkpoint(state, optimizer, scheduler)

    def _end_epoch(self, state: dict, optimizer: torch.optim.Optimizer) -> None:
        cfg = self.config
        valid_acc = self.evaluate_valid()
        count = max(state["loss_count"], 1)
        log = EpochLog(
            epoch=state["epoch"] + 1,
            step=state["global_step"],
            train_loss=state["loss_sum"] / count,
            valid_accuracy=valid_acc,
            lr=optimizer.param_groups[0]["lr"],
            seconds=state["train_seconds"],
            examples_per_second=state["examples_seen"] / max(state["train_seconds"], 1e-9),
            parts={k: v / count for k, v in state["parts_sum"].items()},
        )
        state["history"].append(asdict(log))
        with (self.run_dir / LOG_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(log)) + "\n")
        if valid_acc is not None:
            if state["best_valid"] is None or valid_acc > state["best_valid"]:
                state.update(best_valid=valid_acc, best_epoch=state["epoch"] + 1, bad_epochs=0)
                self.clf.save(self.run_dir / MODEL_DIR)
            else:
                state["bad_epochs"] += 1
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        state["loss_sum"], state["loss_count"], state["parts_sum"] = 0.0, 0, {}
        finished = state["epoch"] >= cfg.epochs or state["global_step"] >= self.total_steps
        if state["bad_epochs"] >= cfg.patience:
            state["stopped_early"] = True
            finished = True
        state["done"] = finished
