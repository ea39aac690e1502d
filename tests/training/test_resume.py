import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("resume_script.py")


def _run(run_dir: Path, mode: str, delay: float = 0.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), mode, str(delay)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_sigkill_then_resume_gives_identical_weights(tmp_path: Path):
    reference = tmp_path / "reference"
    done = _run(reference, "fresh")
    assert done.returncode == 0, done.stderr
    assert "DONE 24" in done.stdout  # 60 examples / 8 = 8 steps x 3 epochs

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(killed), "fresh", "0.15"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    state_file = killed / "checkpoint" / "state.json"
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline:
        if state_file.is_file():
            try:
                step = json.loads(state_file.read_text())["global_step"]
            except (ValueError, KeyError):
                step = 0  # caught mid-rename; poll again
            if step >= 10:  # past the first epoch, inside the second (a mid-epoch checkpoint)
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 10 <= step < 24, f"killed at step {step}; the kill must land mid-run"

    resumed = _run(killed, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "DONE 24" in resumed.stdout
    # the reported training time covers the killed part too: its checkpointed steps slept 0.15 s each,
    # while the resumed part (no delay) takes a fraction of that
    wall = float(resumed.stdout.split("DONE 24")[1].split()[0])
    assert wall >= step * 0.15, f"a resumed run reported {wall:.3f} s, less than its first part's sleeps"
    ref, got = _weights(reference), _weights(killed)
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), f"{name} differs after resume"
    ref_log = (reference / "train_log.jsonl").read_text().splitlines()
    got_log = (killed / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["valid_accuracy"] for x in ref_log] == [
        json.loads(x)["valid_accuracy"] for x in got_log
    ]
