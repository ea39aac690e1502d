"""Run by test_resume.py in a subprocess: train a tiny model, slowly, so the test can SIGKILL it."""

import sys
import time
from pathlib import Path

import torch

from rationalign.data.types import IntentDataset, LabelSpace
from rationalign.models.classifier import IntentClassifier
from rationalign.training.config import TrainConfig
from rationalign.training.objectives import CrossEntropyObjective
from rationalign.training.trainer import Trainer

torch.set_num_threads(1)


class SlowCrossEntropy(CrossEntropyObjective):
    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def __call__(self, clf, batch):
        time.sleep(self.delay)
        return super().__call__(clf, batch)


def main() -> None:
    run_dir, resume, delay = Path(sys.argv[1]), sys.argv[2] == "resume", float(sys.argv[3])
    words = ["block", "freeze", "activate", "enable", "alarm", "wake"]
    pairs = [(f"please {w} it {i}", w[:2]) for i in range(10) for w in words]
    train = IntentDataset.from_pairs(pairs)
    valid = train.subset(range(0, 60, 5))
    space = LabelSpace.from_labels(train.labels)
    clf = IntentClassifier.tiny(space, seed=7)
    # dropout on, two epochs with a mid-epoch checkpoint every 3 steps: resume must restore RNG and position
    cfg = TrainConfig(epochs=3, batch_size=8, checkpoint_every=3, lr=1e-3, seed=5, patience=5)
    result = Trainer(clf, train, valid, cfg, run_dir, objective=SlowCrossEntropy(delay), progress=False).fit(
        resume=resume
    )
    print("DONE", result.steps, f"{result.wall_seconds:.3f}", flush=True)


if __name__ == "__main__":
    main()
