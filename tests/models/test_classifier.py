import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from rationalign.data.types import LabelSpace
from rationalign.errors import ModelError
from rationalign.models.classifier import IntentClassifier

TEXTS = ["block my card", "what alarms do i have tomorrow morning", "hi"]


@pytest.mark.parametrize(
    ("arch", "pooling"), [("bert", "mean"), ("bert", "cls"), ("mpnet", "mean"), ("llama", "last")]
)
def test_save_load_round_trip_and_hf_auto_loading(tmp_path, tiny_label_space, arch, pooling):
    clf = IntentClassifier.tiny(tiny_label_space, arch=arch, pooling=pooling, seed=3)
    clf.temperature = 1.7
    before = clf.predict_proba(TEXTS)
    assert before.shape == (3, 4) and np.allclose(before.sum(1), 1, atol=1e-5)
    folder = clf.save(tmp_path / "m")
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    again = IntentClassifier.load(folder)
    assert again.label_space == tiny_label_space and again.temperature == 1.7 and again.pooling == pooling
    np.testing.assert_allclose(again.predict_proba(TEXTS), before, atol=1e-6)
    # transformers alone loads it with the label names (mean pooling ships its class as remote code)
    hf = AutoModelForSequenceClassification.from_pretrained(
        folder, trust_remote_code=(pooling == "mean")
    ).eval()
    assert [hf.config.id2label[i] for i in range(4)] == list(tiny_label_space.names)
    with torch.no_grad():
        logits = hf(**again.encode(TEXTS)).logits
    np.testing.assert_allclose(torch.softmax(logits / 1.7, -1).numpy(), before, atol=1e-5)


def test_batched_logits_equal_one_by_one(tiny_classifier):
    texts = TEXTS * 5
    batched = tiny_classifier.logits(texts, batch_size=4)
    single = torch.cat([tiny_classifier.logits([t]) for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_left_padding_for_causal_lm(tiny_label_space):
    clf = IntentClassifier.tiny(tiny_label_space, arch="llama")
    assert clf.tokenizer.padding_side == "left"
    torch.testing.assert_close(
        clf.logits(TEXTS), torch.cat([clf.logits([t]) for t in TEXTS]), atol=1e-4, rtol=1e-4
    )


def test_predict_abstains_below_threshold(tiny_classifier):
    tiny_classifier.abstain_threshold = 0.99
    preds = tiny_classifier.predict(TEXTS)
    assert all(p.abstained for p in preds)
    assert preds[0].label in tiny_classifier.label_space


def test_from_base_loads_every_backbone_weight():
    space = LabelSpace(["a", "b"])
    clf = IntentClassifier.from_base("minilm-l6", space)
    base = AutoModel.from_pretrained(clf.meta["base_model_path"])
    ours = clf.model.backbone.state_dict()
    for name, tensor in base.state_dict().items():
        if name.startswith("pooler"):
            continue  # mean pooling does not use BERT's pooler
        torch.testing.assert_close(ours[name], tensor, msg=name)
    assert 22_000_000 < clf.num_parameters() < 23_000_000
    small = IntentClassifier.from_base("minilm-l6", space, num_layers=2)
    assert small.model.config.num_hidden_layers == 2


def test_bad_model_inputs(tmp_path):
    space = LabelSpace(["a", "b"])
    with pytest.raises(ModelError, match="num_layers=9"):
        IntentClassifier.from_base("minilm-l6", space, num_layers=9)
    with pytest.raises(ModelError, match="not a rationalign model"):
        IntentClassifier.load(tmp_path)
    with pytest.raises(ModelError, match="pooling='last'"):
        IntentClassifier.from_base("smollm2-135m", space, pooling="mean")
