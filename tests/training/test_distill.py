import dataclasses
import math

import numpy as np
import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

from rationalign.attribution.words import split_words
from rationalign.data.types import IntentDataset
from rationalign.models.classifier import IntentClassifier
from rationalign.training.config import TrainConfig
from rationalign.training.distill import (
    DistillationObjective,
    DistillConfig,
    alignment_loss,
    kd_loss,
    normalise_prior,
    student_attribution,
)
from rationalign.training.objectives import Batch
from rationalign.training.trainer import Trainer

TEXTS = ["block my card please", "set an alarm for seven", "check alarms"]


def _clf(space, arch="bert"):
    clf = IntentClassifier.tiny(space, arch=arch, seed=11)
    clf.model.eval()  # no dropout: attributions are deterministic
    return clf


def _captum_words(clf, attributions, text):
    enc = clf.tokenizer([text], return_offsets_mapping=True)
    from rationalign.attribution.words import align_offsets

    special = clf.tokenizer.get_special_tokens_mask(enc["input_ids"][0], already_has_special_tokens=True)
    index = align_offsets(text, enc["offset_mapping"][0], special)
    words = np.zeros(len(split_words(text)))
    for tok, w in enumerate(index):
        if w >= 0:
            words[w] += float(attributions[0, tok].sum())
    return words


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_gradient_x_input_matches_captum(tiny_label_space, arch):
    clf = _clf(tiny_label_space, arch)
    targets = torch.tensor([0, 2, 3])
    ours = student_attribution(clf, TEXTS, targets, method="gxi", output="logit", create_graph=False)
    for i, text in enumerate(TEXTS):
        enc = clf.tokenizer([text], return_tensors="pt")

        def forward(ids, mask):
            return clf.model(input_ids=ids, attention_mask=mask).logits

        ref = LayerGradientXActivation(forward, clf.model.get_input_embeddings()).attribute(
            enc["input_ids"], target=int(targets[i]), additional_forward_args=(enc["attention_mask"],)
        )
        expected = _captum_words(clf, ref.detach(), text)
        got = ours.word_scores[i, : len(expected)].detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_ig_k_steps_matches_captum(tiny_label_space):
    clf = _clf(tiny_label_space)
    targets = torch.tensor([1, 2, 0])
    ours = student_attribution(
        clf, TEXTS, targets, method="ig", ig_steps=8, output="logit", create_graph=False
    )
    for i, text in enumerate(TEXTS):
        enc = clf.tokenizer([text], return_tensors="pt")
        ids = enc["input_ids"]
        baseline = torch.where(
            torch.isin(ids, torch.tensor(clf.tokenizer.all_special_ids)),
            ids,
            torch.full_like(ids, clf.tokenizer.pad_token_id),
        )

        def forward(x, mask):
            return clf.model(input_ids=x, attention_mask=mask).logits

        lig = LayerIntegratedGradients(forward, clf.model.get_input_embeddings())
        ref = lig.attribute(
            ids,
            baselines=baseline,
            target=int(targets[i]),
            n_steps=8,
            method="gausslegendre",
            additional_forward_args=(enc["attention_mask"],),
        )
        expected = _captum_words(clf, ref.detach(), text)
        np.testing.assert_allclose(
            ours.word_scores[i, : len(expected)].detach().numpy(), expected, rtol=1e-3, atol=1e-5
        )


@pytest.mark.parametrize("method", ["gxi", "ig"])
def test_self_attribution_gradcheck(tiny_label_space, method):
    clf = _clf(tiny_label_space)
    clf.model.double()
    head = clf.model.classifier.weight
    targets = torch.tensor([0, 3])

    # float64 end to end (output='logit': the log-softmax path computes in float32 on purpose); the
    # head weight is swapped for a plain tensor so gradcheck can differentiate w.r.t. it
    w0 = head.detach().clone().requires_grad_(True)

    def functional(weight):
        orig = clf.model.classifier.weight
        del clf.model.classifier.weight
        clf.model.classifier.weight = weight
        try:
            return student_attribution(
                clf, TEXTS[:2], targets, method=method, ig_steps=2, output="logit"
            ).word_scores
        finally:
            del clf.model.classifier.weight
            clf.model.classifier.weight = orig

    assert torch.autograd.gradcheck(functional, (w0,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_kd_loss_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # student p = [0.25, 0.75] at T=1
    teacher = torch.tensor([[0.5, 0.5]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kd_loss(logits, teacher, 1.0).item() == pytest.approx(expected, rel=1e-5)
    # at T=2 the teacher [0.2, 0.8] is re-tempered to sqrt-probabilities [1/3, 2/3]; student logits/2
    t2 = kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.2, 0.8]]), 2.0).item()
    pt = np.array([1 / 3, 2 / 3])
    assert t2 == pytest.approx(4 * float((pt * np.log(pt / 0.5)).sum()), rel=1e-5)


def test_alignment_losses_hand_computed():
    mask = torch.tensor([[True, True, False]])
    prior = torch.tensor([[1.0, 0.0, 0.0]])
    scores = torch.tensor([[1.0, -1.0, 5.0]])  # standardised over the two real words: [1, -1]
    s = np.exp([1, -1]) / np.exp([1, -1]).sum()
    assert alignment_loss(scores, prior, mask, "mse").item() == pytest.approx(
        (s[0] - 1) ** 2 + s[1] ** 2, rel=1e-5
    )
    assert alignment_loss(scores, prior, mask, "kl").item() == pytest.approx(-math.log(s[0]), rel=1e-5)
    cos = 1 / math.sqrt(2)
    assert alignment_loss(scores, prior, mask, "cosine").item() == pytest.approx(1 - cos, rel=1e-5)


def test_normalise_prior():
    np.testing.assert_allclose(normalise_prior(np.array([2.0, -1.0, 2.0])), [0.5, 0.0, 0.5])
    assert normalise_prior(np.array([-1.0, 0.0])) is None


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])  # bfloat16: the double backward under autocast
def test_alignment_training_moves_attributions_towards_the_prior(tiny_label_space, precision):
    texts = ["block my card", "freeze my card", "set my alarm", "check my alarm"] * 4
    labels = ["card_block", "card_block", "alarm_set", "alarm_query"] * 4
    ds = IntentDataset.from_pairs(zip(texts, labels, strict=True))
    # prior: all mass on the verb (the discriminative word), none on the shared "card"/"alarm"
    priors = [np.array([1.0, 0.0, 0.0]) for _ in texts]
    targets = torch.tensor(ds.label_ids(tiny_label_space))

    def align_now(clf):
        clf.model.eval()
        attr = student_attribution(clf, texts, targets, create_graph=False)
        prior = torch.tensor(np.stack(priors), dtype=torch.float32)
        return alignment_loss(attr.word_scores.detach(), prior, attr.word_mask, "mse").item()

    clf = IntentClassifier.tiny(tiny_label_space, seed=2)
    before = align_now(clf)
    objective = DistillationObjective(DistillConfig(lam=5.0, alpha=0.0), priors=priors)
    cfg = TrainConfig(
        epochs=8, batch_size=8, lr=3e-3, head_lr=3e-3, warmup_ratio=0.0, patience=99, precision=precision
    )
    import tempfile

    Trainer(clf, ds, None, cfg, tempfile.mkdtemp(), objective=objective, progress=False).fit()
    clf.precision = "float32"  # measured the same way before and after
    after = align_now(clf)
    assert after < 0.5 * before, (before, after)


def test_objective_parts_and_warmup(tiny_label_space):
    clf = IntentClassifier.tiny(tiny_label_space, seed=0)
    enc = clf.encode(TEXTS)
    batch = Batch(
        enc["input_ids"], enc["attention_mask"], torch.tensor([0, 2, 3]), torch.tensor([0, 1, 2]), TEXTS
    )
    soft = np.full((3, 4), 0.25)
    priors = [np.ones(len(split_words(t))) for t in TEXTS]
    obj = DistillationObjective(DistillConfig(warmup_steps=2), soft_labels=soft, priors=priors)
    first = obj(clf, batch)  # lambda = 0 at step 0: no alignment term yet
    assert set(first.parts) == {"ce", "kd"}
    assert set(obj(clf, batch).parts) == {"ce", "kd"}  # the step comes with the batch: still step 0
    second = obj(clf, dataclasses.replace(batch, step=1))
    assert set(second.parts) == {"ce", "kd", "align"}
    second.loss.backward()
    assert clf.model.classifier.weight.grad is not None
    assert [obj.lambda_at(step) for step in range(4)] == [0.0, 0.5, 1.0, 1.0]


def test_align_every_aligns_whole_batches_on_one_step_in_k(tiny_label_space, monkeypatch):
    from rationalign.training import distill

    clf = _clf(tiny_label_space)
    enc = clf.encode(TEXTS)
    batch = Batch(
        enc["input_ids"], enc["attention_mask"], torch.tensor([0, 2, 3]), torch.tensor([0, 1, 2]), TEXTS
    )
    soft = np.full((3, 4), 0.25)
    priors = [np.arange(1.0, len(split_words(t)) + 1) for t in TEXTS]
    every = DistillationObjective(DistillConfig(align_every=3), soft_labels=soft, priors=priors)
    always = DistillationObjective(DistillConfig(), soft_labels=soft, priors=priors)
    unaligned = DistillationObjective(DistillConfig(lam=0.0), soft_labels=soft, priors=priors)
    calls = []
    real_attribution = distill.student_attribution
    monkeypatch.setattr(
        distill, "student_attribution", lambda *a, **k: calls.append(len(a[1])) or real_attribution(*a, **k)
    )
    for step in range(7):
        at_step = dataclasses.replace(batch, step=step)
        out = every(clf, at_step)
        if step % 3 == 0:  # the whole batch, with the same loss as aligning every step
            reference = always(clf, at_step)
            assert set(out.parts) == {"ce", "kd", "align"}
            assert out.parts["align"] == pytest.approx(reference.parts["align"], rel=1e-5)
            assert float(out.loss.detach()) == pytest.approx(float(reference.loss.detach()), rel=1e-5)
        else:  # CE + KD only, and the double backward is skipped, not computed and dropped
            assert set(out.parts) == {"ce", "kd"}
            assert float(out.loss.detach()) == pytest.approx(
                float(unaligned(clf, at_step).loss.detach()), rel=1e-6
            )
    assert calls == [3] * 6  # steps 0, 3 and 6 of align_every=3, and the reference at each of them
    assert every.lambda_at(4) == 0.0 and every.lambda_at(6) == 1.0


def test_a_resumed_distillation_aligns_the_same_steps_with_the_same_lambda(tiny_label_space, tmp_path):
    """Warm-up and align_every follow the trainer's global step, so a run killed mid-way and resumed
    with a fresh objective applies the same lambda at every step and ends with the same weights."""
    texts = ["block my card", "set an alarm for seven", "check my alarms", "my card is lost"] * 3
    labels = ["card_block", "alarm_set", "alarm_query", "card_block"] * 3
    ds = IntentDataset.from_pairs(zip(texts, labels, strict=True))
    priors = [np.arange(1.0, len(split_words(t)) + 1) for t in texts]
    config = DistillConfig(alpha=0.0, warmup_steps=6, align_every=2)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-3, warmup_ratio=0.0, patience=99, checkpoint_every=1)

    class Killed(Exception):
        pass

    class Recording(DistillationObjective):
        def __init__(self, crash_at: int | None = None):
            super().__init__(config, priors=priors)
            self.crash_at, self.seen = crash_at, []

        def __call__(self, clf, batch):
            if batch.step == self.crash_at:
                raise Killed  # stands in for a kill after step crash_at - 1's checkpoint
            self.seen.append((batch.step, self.lambda_at(batch.step)))
            return super().__call__(clf, batch)

    def fit(run_dir, objective, resume=False):
        clf = IntentClassifier.tiny(tiny_label_space, seed=5)
        # no validation set: the model is the last weights, not the best epoch's
        Trainer(clf, ds, None, cfg, run_dir, objective=objective, progress=False).fit(resume=resume)
        return clf

    reference_objective = Recording()
    reference = fit(tmp_path / "reference", reference_objective)
    assert [lam for _, lam in reference_objective.seen] == [0, 0, 2 / 6, 0, 4 / 6, 0, 1, 0, 1]
    with pytest.raises(Killed):
        fit(tmp_path / "killed", Recording(crash_at=5))
    resumed_objective = Recording()
    resumed = fit(tmp_path / "killed", resumed_objective, resume=True)
    assert resumed_objective.seen == reference_objective.seen[5:]
    got = resumed.model.state_dict()
    for name, ref in reference.model.state_dict().items():
        assert torch.equal(ref, got[name]), f"{name} differs after resume"


def test_align_fraction_aligns_a_subset_and_keeps_every_rows_logits(tiny_label_space):
    clf = _clf(tiny_label_space)  # eval mode: no dropout, so logits are comparable across calls
    enc = clf.encode(TEXTS)
    batch = Batch(
        enc["input_ids"], enc["attention_mask"], torch.tensor([0, 2, 3]), torch.tensor([0, 1, 2]), TEXTS
    )
    priors = [np.arange(1.0, len(split_words(t)) + 1) for t in TEXTS]
    full = DistillationObjective(DistillConfig(alpha=0.0), priors=priors)(clf, batch)
    part = DistillationObjective(DistillConfig(alpha=0.0, align_fraction=0.34), priors=priors)(clf, batch)
    with torch.no_grad():
        plain = clf.model(**batch.model_inputs()).logits
    # every row's logits (and so CE) are the same whichever rows pay for the attribution
    torch.testing.assert_close(part.logits.detach(), plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.logits.detach(), plain, atol=1e-5, rtol=1e-5)
    assert part.parts["ce"] == pytest.approx(full.parts["ce"], abs=1e-5)
    # the alignment term of 0.34 x 3 rows -> the first 2 rows only
    first_two = DistillationObjective(DistillConfig(alpha=0.0), priors=priors[:2])
    sub = Batch(batch.input_ids[:2], batch.attention_mask[:2], batch.labels[:2], batch.indices[:2], TEXTS[:2])
    assert part.parts["align"] == pytest.approx(first_two(clf, sub).parts["align"], rel=1e-4)
    assert part.parts["align"] != pytest.approx(full.parts["align"], rel=1e-3)
    part.loss.backward()
    assert clf.model.classifier.weight.grad is not None


def test_transfer_rows_skip_the_attribution_and_keep_their_logits(tiny_label_space, monkeypatch):
    import rationalign.training.distill as distill

    clf = _clf(tiny_label_space)
    enc = clf.encode(TEXTS)
    batch = Batch(
        enc["input_ids"], enc["attention_mask"], torch.tensor([0, 2, 3]), torch.tensor([0, 1, 2]), TEXTS
    )
    priors = [np.arange(1.0, len(split_words(t)) + 1) for t in TEXTS]
    soft = np.full((3, 4), 0.25)
    explained: list[list[str]] = []
    real = distill.student_attribution

    def spy(clf, texts, targets, **kwargs):
        explained.append(list(texts))
        return real(clf, texts, targets, **kwargs)

    monkeypatch.setattr(distill, "student_attribution", spy)
    # row 1 is a transfer row (no gold label, no prior): only rows 0 and 2 pay for the attribution
    labelled = np.array([True, False, True])
    out = DistillationObjective(
        DistillConfig(), soft_labels=soft, priors=[priors[0], None, priors[2]], labelled=labelled
    )(clf, batch)
    assert explained == [[TEXTS[0], TEXTS[2]]]
    with torch.no_grad():
        plain = clf.model(**batch.model_inputs()).logits
    torch.testing.assert_close(out.logits.detach(), plain, atol=1e-5, rtol=1e-5)  # rows in batch order
    only_labelled = DistillationObjective(DistillConfig(alpha=0.0), priors=[priors[0], priors[2]])
    sub = Batch(
        batch.input_ids[[0, 2]],
        batch.attention_mask[[0, 2]],
        batch.labels[[0, 2]],
        torch.tensor([0, 1]),
        [TEXTS[0], TEXTS[2]],
    )
    assert out.parts["align"] == pytest.approx(only_labelled(clf, sub).parts["align"], rel=1e-4)
    # a batch of transfer rows only: no attribution, no alignment term, KD alone
    explained.clear()
    none = DistillationObjective(
        DistillConfig(), soft_labels=soft, priors=[None] * 3, labelled=np.zeros(3, bool)
    )
    alone = none(clf, batch)
    assert explained == [] and set(alone.parts) == {"ce", "kd"} and alone.parts["ce"] == 0


@pytest.mark.parametrize("kind", ["mse", "kl", "cosine"])
def test_alignment_loss_gradient_is_finite_on_a_one_word_row(kind):
    # one-word utterances (5 of HWU64's 640 in train_10) have zero variance; the gradient of the
    # standardisation's sqrt used to be inf * 0 = NaN there and wrecked the whole student
    scores = torch.tensor([[0.7, 0.0, 0.0], [1.0, -1.0, 0.5]], requires_grad=True)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    prior = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.2, 0.3]])
    loss = alignment_loss(scores, prior, mask, kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()


def test_alignment_training_with_one_word_utterances_stays_finite(tiny_label_space, tmp_path):
    texts = ["alarm", "block my card", "card", "check my alarm"] * 4
    labels = ["alarm_query", "card_block", "card_block", "alarm_query"] * 4
    ds = IntentDataset.from_pairs(zip(texts, labels, strict=True))
    priors = [np.ones(len(split_words(t))) for t in texts]
    clf = IntentClassifier.tiny(tiny_label_space, seed=3)
    objective = DistillationObjective(DistillConfig(lam=1.0, alpha=0.0, warmup_steps=0), priors=priors)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, warmup_ratio=0.0, patience=99)
    Trainer(clf, ds, None, cfg, tmp_path, objective=objective, progress=False).fit()
    assert all(torch.isfinite(p).all() for p in clf.model.parameters())


def test_trainer_stops_on_a_non_finite_loss_before_applying_it(tiny_label_space, tmp_path):
    from rationalign.errors import ModelError
    from rationalign.training.objectives import CrossEntropyObjective

    class Poisoned(CrossEntropyObjective):
        def __call__(self, clf, batch):
            out = super().__call__(clf, batch)
            out.loss = out.loss * float("nan")
            return out

    ds = IntentDataset.from_pairs([("block my card", "card_block"), ("set my alarm", "alarm_set")] * 4)
    clf = IntentClassifier.tiny(tiny_label_space, seed=3)
    cfg = TrainConfig(epochs=1, batch_size=4, warmup_ratio=0.0)
    with pytest.raises(ModelError, match="non-finite loss or gradient at step 1"):
        Trainer(clf, ds, None, cfg, tmp_path, objective=Poisoned(), progress=False).fit()
    assert all(torch.isfinite(p).all() for p in clf.model.parameters())  # the NaN step was not applied
