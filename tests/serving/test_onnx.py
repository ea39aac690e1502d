"""ONNX export: fp32 equals PyTorch, int8 mostly agrees on a real-size model, the ONNX backend serves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from rationalign.data.types import LabelSpace
from rationalign.errors import ConfigError, ModelError
from rationalign.models.classifier import IntentClassifier
from rationalign.serving.app import create_app
from rationalign.serving.backends import OnnxBackend, load_backend
from rationalign.serving.commands import register
from rationalign.serving.onnx_export import export_model, export_onnx

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx vs httpx2
    from fastapi.testclient import TestClient

LABELS = ["balance", "card_arrival", "exchange_rate", "top_up"]
# Lengths from 1 to ~60 tokens (and one truncated at max_length) exercise both dynamic axes.
TEXTS = [
    "hi",
    "top up",
    "where is my card?",
    "What is the exchange rate for euros to dollars today, and is there a fee?",
    "I ordered a card two weeks ago and it still has not arrived, can you check the delivery status please",
    "balance " * 40,
    "card",
]


def save_tiny(folder: Path, arch: str = "bert", **kwargs) -> Path:
    clf = IntentClassifier.tiny(LabelSpace(LABELS), arch=arch, seed=1, **kwargs)
    clf.temperature = 1.3
    return clf.save(folder)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx")
    model = save_tiny(root / "model")
    out = root / "export"
    result = export_onnx(model, out, int8=True)
    assert result.out_dir == out and result.max_abs_diff is not None and result.max_abs_diff < 1e-5
    return model, out


def test_export_folder_is_self_contained(exported):
    _, out = exported
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model.int8.onnx", "onnx.json", "rationalign.json", "label_space.json"} <= names
    assert "tokenizer.json" in names and "model.safetensors" in names
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["opset"] == 17 and meta["max_abs_diff"] < 1e-5
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".export.")]  # no temp folder left


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_fp32_logits_equal_torch(exported, batch):
    model, out = exported
    clf = IntentClassifier.load(model)
    backend = OnnxBackend(out)
    texts = (TEXTS * 2)[:batch] if batch > 1 else [TEXTS[3]]
    got = backend.logits(texts)
    want = clf.logits(texts, batch_size=batch).numpy()
    assert got.shape == (batch, len(LABELS))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_mpnet_exports_too(tmp_path):
    model = save_tiny(tmp_path / "mpnet", arch="mpnet")
    export_onnx(model, tmp_path / "out")
    want = IntentClassifier.load(model).logits(TEXTS).numpy()
    np.testing.assert_allclose(OnnxBackend(tmp_path / "out").logits(TEXTS), want, atol=1e-4, rtol=0)


def test_onnx_backend_serves_the_same_answers(exported):
    model, out = exported
    clf = IntentClassifier.load(model)
    want = (clf.logits(TEXTS).double() / clf.temperature).softmax(-1).numpy()
    for backend in ("onnx", "onnx-int8"):
        with TestClient(create_app(out, backend=backend)) as c:
            health = c.get("/health").json()
            assert health["backend"] == backend and health["explain"] is True
            r = c.post("/predict", json={"texts": TEXTS, "top_k": 4})
            assert r.status_code == 200, r.text
            got = np.array(
                [
                    [t["probability"] for t in sorted(p["top_k"], key=lambda t: t["label"])]
                    for p in r.json()["predictions"]
                ]
            )
            if backend == "onnx":
                np.testing.assert_allclose(got, want, atol=1e-4)
            else:  # int8 weights: close, not equal
                np.testing.assert_allclose(got, want, atol=0.05)
            assert c.post("/explain", json={"text": "where is my card?"}).status_code == 200


def test_export_without_weights_serves_but_cannot_explain(exported, tmp_path):
    model, _ = exported
    out = tmp_path / "lean"
    export_model(model, out, onnx=True, copy_weights=False)
    assert not (out / "model.safetensors").exists()
    with TestClient(create_app(out, backend="onnx")) as c:
        assert c.get("/health").json()["explain"] is False
        assert c.post("/predict", json={"texts": ["hi"]}).status_code == 200
        r = c.post("/explain", json={"text": "hi"})
        assert r.status_code == 501 and "PyTorch weights" in r.json()["detail"]
    with pytest.raises(ModelError, match="--backend onnx"):
        load_backend(out, "torch")


def test_causal_lm_export_is_refused_before_writing(tmp_path):
    model = save_tiny(tmp_path / "llama", arch="llama")
    with pytest.raises(ModelError, match="causal"):
        export_onnx(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_export_leaves_nothing(exported, tmp_path, monkeypatch):
    import rationalign.serving.onnx_export as onnx_export

    def boom(src, dst):
        raise RuntimeError("disk full")

    monkeypatch.setattr(onnx_export, "quantize_int8", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_onnx(exported[0], tmp_path / "out", int8=True)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_export(cli, exported, tmp_path):
    model, _ = exported
    runner = CliRunner()
    plain = runner.invoke(cli, ["export", str(model), "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert not list((tmp_path / "plain").glob("*.onnx"))
    assert IntentClassifier.load(tmp_path / "plain").label_space.names == tuple(LABELS)
    onnx = runner.invoke(cli, ["export", str(model), "--out", str(tmp_path / "onnx"), "--int8"])
    assert onnx.exit_code == 0, onnx.output
    assert "max |logit difference|" in onnx.output and "--backend onnx-int8" in onnx.output
    assert (tmp_path / "onnx" / "model.onnx").is_file() and (tmp_path / "onnx" / "model.int8.onnx").is_file()
    again = runner.invoke(cli, ["export", str(model), "--out", str(tmp_path / "onnx"), "--onnx"])
    assert again.exit_code == 0  # an earlier export is replaced
    assert not (tmp_path / "onnx" / "model.int8.onnx").exists()


@pytest.mark.parametrize("case", ["not-a-model-folder", "same-as-model", "missing-model"])
def test_cli_export_user_errors(cli, exported, tmp_path, case):
    model, _ = exported
    if case == "not-a-model-folder":
        (tmp_path / "precious").mkdir()
        (tmp_path / "precious" / "notes.txt").write_text("keep me")
        args, error = ["export", str(model), "--out", str(tmp_path / "precious"), "--onnx"], ConfigError
    elif case == "same-as-model":
        args, error = ["export", str(model), "--out", str(model)], ConfigError
    else:
        args, error = ["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")], ConfigError
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, error), result.output
    assert "\n" not in str(result.exception) and "fix:" in str(result.exception)
    if case == "not-a-model-folder":
        assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------- real size
def centroid_head(clf: IntentClassifier, texts: list[str], labels: list[str]) -> None:
    """Set the head to scaled class centroids of the frozen mean-pooled embeddings (no training):
    a stand-in for a trained student with realistic logit margins, which int8 noise must not flip."""
    ids = torch.tensor(clf.label_space.ids(labels))
    with torch.inference_mode():
        feats = []
        for start in range(0, len(texts), 64):
            batch = clf.encode(texts[start : start + 64])
            hidden = clf.model.backbone(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            feats.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        feats = torch.cat(feats)
        centroids = torch.zeros(len(clf.label_space), feats.shape[1]).index_add_(0, ids, feats)
        centroids = torch.nn.functional.normalize(centroids, dim=-1)
        clf.model.classifier.weight.copy_(centroids * 20.0)
        clf.model.classifier.bias.zero_()


@pytest.mark.slow
def test_int8_agrees_with_torch_on_a_real_size_model(tmp_path, datasets_dir, monkeypatch):
    from rationalign.data.io import load_dataset

    # onnxruntime's tools have dumped debug graphs and external-data files into the working directory
    # (a 90 MB MiniLM graph once landed in the repo root); an export must write only under its out folder.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    train = load_dataset(datasets_dir / "banking77" / "train_5.jsonl")
    test = load_dataset(datasets_dir / "banking77" / "test.jsonl")
    space = LabelSpace.from_labels(test.labels)
    clf = IntentClassifier.from_base("minilm-l6", space)
    clf.model.eval()
    # Two training examples per intent are enough for a head with real margins (and keep this test short).
    shots: dict[str, list[str]] = {}
    for text, label in zip(train.texts, train.labels, strict=True):
        if len(shots.setdefault(label, [])) < 2:
            shots[label].append(text)
    centroid_head(clf, [t for ts in shots.values() for t in ts], [y for y, ts in shots.items() for _ in ts])
    model = clf.save(tmp_path / "minilm")
    result = export_onnx(model, tmp_path / "export", int8=True)
    texts = list(test.texts)[::20]  # 154 of the 3080 test utterances
    fp32 = OnnxBackend(tmp_path / "export").logits(texts)
    int8 = OnnxBackend(tmp_path / "export", int8=True).logits(texts)
    # fp32 ONNX is PyTorch (checked on a slice, to keep this test short); int8 is compared with it.
    np.testing.assert_allclose(fp32[:24], clf.logits(texts[:24]).numpy(), atol=1e-4, rtol=0)
    assert list(cwd.iterdir()) == []
    agreement = float((int8.argmax(1) == fp32.argmax(1)).mean())
    print(f"int8 argmax agreement with fp32/torch on {len(texts)} Banking77 test texts: {agreement:.3f}")
    assert agreement >= 0.9
    assert (
        result.int8_path is not None
        and result.int8_path.stat().st_size < 0.4 * result.onnx_path.stat().st_size
    )
