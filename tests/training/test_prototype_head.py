import tempfile

import torch

from rationalign.data.types import IntentDataset
from rationalign.models.classifier import IntentClassifier
from rationalign.training.config import TrainConfig
from rationalign.training.trainer import Trainer


def test_prototype_head_is_a_nearest_centroid_classifier(tiny_label_space):
    texts = [
        "block my card",
        "freeze my card",
        "set my alarm",
        "set an alarm now",
        "check my alarm",
        "show alarms",
        "activate card",
        "enable my card",
    ]
    labels = [
        "card_block",
        "card_block",
        "alarm_set",
        "alarm_set",
        "alarm_query",
        "alarm_query",
        "card_activate",
        "card_activate",
    ]
    ds = IntentDataset.from_pairs(zip(texts, labels, strict=True))
    clf = IntentClassifier.tiny(tiny_label_space, seed=4)
    trainer = Trainer(clf, ds, None, TrainConfig(prototype_scale=10.0), tempfile.mkdtemp(), progress=False)
    trainer.init_head_from_prototypes()
    clf.model.eval()
    with torch.no_grad():
        enc = clf.encode(texts)
        hidden = clf.model.backbone(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        y = torch.tensor(ds.label_ids(tiny_label_space))
        centroids = torch.stack([pooled[y == c].mean(0) for c in range(4)])
        cosine = (
            torch.nn.functional.normalize(pooled, dim=-1) @ torch.nn.functional.normalize(centroids, dim=-1).T
        )
        logits = clf.model(**enc).logits
    # the head ranks classes exactly like cosine to the class centroids (pooled norms are per-row constants)
    assert torch.equal(logits.argmax(-1), cosine.argmax(-1))
    scaled = logits / pooled.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(scaled / scaled.max(), cosine / cosine.max(), atol=1e-4, rtol=1e-4)
    assert torch.count_nonzero(clf.model.classifier.bias) == 0
