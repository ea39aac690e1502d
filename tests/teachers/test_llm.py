"""LLMTeacher: the prefix KV cache gives the same distribution as the full prompt; both modes; cost; spec."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.teachers import Teacher, load_teacher
from rationalign.teachers.errors import TeacherError, TeacherSpecError
from rationalign.teachers.llm import LLMTeacher


def _reference_codes(teacher: LLMTeacher, texts: list[str]) -> np.ndarray:
    """The definition: one UNPADDED full prompt per text, no cache, softmax over the code logits."""
    rows = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([teacher.prompt_ids(text)])
            logits = teacher.model(input_ids=ids).logits[0, -1].float()
            rows.append(torch.softmax(logits[teacher.code_ids], -1).double().numpy())
    return np.array(rows)


def _reference_label_text(teacher: LLMTeacher, text: str, normalise: bool) -> np.ndarray:
    """log p(answer | full prompt) summed over the answer's tokens, one unpadded sequence per label."""
    scores = []
    with torch.inference_mode():
        for answer in teacher.prompt.answer_texts:
            ans = list(teacher.tokenizer(answer, add_special_tokens=False)["input_ids"])
            ids = teacher.prompt_ids(text)
            logits = teacher.model(input_ids=torch.tensor([ids + ans])).logits[0, len(ids) - 1 :]
            logp = torch.log_softmax(logits.double(), -1)
            total = sum(float(logp[t, tok]) for t, tok in enumerate(ans))
            scores.append(total / len(ans) if normalise else total)
    scores = np.array(scores)
    return np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()


def test_codes_mode_gives_distributions(tiny_teacher, small_space, texts):
    assert isinstance(tiny_teacher, Teacher)
    probs = tiny_teacher.predict_proba(texts)
    assert probs.shape == (len(texts), len(small_space))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs > 0).all()
    assert probs.max(axis=1).min() > 2.0 / len(small_space)  # the tiny model is peaked, not uniform
    assert tiny_teacher.predict_proba([]).shape == (0, len(small_space))


def test_prefix_cache_equals_the_full_prompt_without_cache(
    tiny_llm_dir, small_space, texts, smollm_tokenizer
):
    cached = LLMTeacher(tiny_llm_dir, small_space, batch_size=4, tokenizer=smollm_tokenizer)
    uncached = LLMTeacher(
        tiny_llm_dir, small_space, batch_size=4, use_prefix_cache=False, tokenizer=smollm_tokenizer
    )
    a, b = cached.predict_proba(texts), uncached.predict_proba(texts)
    ref = _reference_codes(cached, texts)
    np.testing.assert_allclose(a, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(b, ref, atol=1e-4, rtol=0)
    assert np.abs(a - ref).max() < 1e-5  # in practice float32 rounding only
    assert len(set(a.argmax(1))) > 1  # texts get different answers: the comparison is not trivial


def test_batch_size_order_and_memory_cap_do_not_change_results(
    tiny_llm_dir, small_space, texts, smollm_tokenizer
):
    base = LLMTeacher(tiny_llm_dir, small_space, batch_size=16, tokenizer=smollm_tokenizer).predict_proba(
        texts
    )
    one = LLMTeacher(tiny_llm_dir, small_space, batch_size=1, tokenizer=smollm_tokenizer).predict_proba(texts)
    capped = LLMTeacher(tiny_llm_dir, small_space, batch_size=16, max_cache_mb=0.05)  # forces 1-2 rows/call
    np.testing.assert_allclose(one, base, atol=1e-5)
    np.testing.assert_allclose(capped.predict_proba(texts), base, atol=1e-5)
    assert capped.cost.forward_passes > 3
    perm = np.random.default_rng(0).permutation(len(texts))
    shuffled = LLMTeacher(tiny_llm_dir, small_space, batch_size=3, tokenizer=smollm_tokenizer).predict_proba(
        [texts[i] for i in perm]
    )
    np.testing.assert_allclose(shuffled, base[perm], atol=1e-5)


def test_the_same_prefix_cache_serves_many_calls(tiny_teacher, texts):
    first = tiny_teacher.predict_proba(texts[:4])
    tiny_teacher.predict_proba(texts[4:])
    np.testing.assert_allclose(tiny_teacher.predict_proba(texts[:4]), first, atol=1e-6)


def test_label_text_mode_matches_scoring_each_label_without_cache(
    tiny_llm_dir, small_space, texts, smollm_tokenizer
):
    for normalise in (False, True):
        teacher = LLMTeacher(
            tiny_llm_dir,
            small_space,
            mode="label_text",
            length_normalise=normalise,
            batch_size=2,
            max_cache_mb=0.2,
            tokenizer=smollm_tokenizer,
        )
        probs = teacher.predict_proba(texts[:2])
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
        for row, text in zip(probs, texts[:2], strict=True):
            np.testing.assert_allclose(
                row, _reference_label_text(teacher, text, normalise), atol=1e-4, rtol=0
            )


def test_cost_counts_forward_passes_and_tokens(tiny_llm_dir, small_space, texts, smollm_tokenizer):
    teacher = LLMTeacher(tiny_llm_dir, small_space, batch_size=4, tokenizer=smollm_tokenizer)
    teacher.predict_proba(texts)
    suffix_tokens = sum(len(teacher.suffix_ids(t)) for t in texts)
    prefix = len(teacher.prefix_ids)
    cost = teacher.cost
    assert cost.forward_passes == 1 + math.ceil(len(texts) / 4)  # prefix once, then one pass per batch
    assert cost.tokens == prefix + suffix_tokens and cost.texts == len(texts)
    assert cost.padded_tokens >= cost.tokens - prefix and cost.prefix_tokens == prefix
    teacher.predict_proba(texts)  # the prefix is not run again
    assert teacher.cost.forward_passes == 1 + 2 * math.ceil(len(texts) / 4)
    plain = LLMTeacher(
        tiny_llm_dir, small_space, batch_size=4, use_prefix_cache=False, tokenizer=smollm_tokenizer
    )
    plain.predict_proba(texts)
    assert plain.cost.forward_passes == math.ceil(len(texts) / 4)
    assert plain.cost.tokens == len(texts) * prefix + suffix_tokens
    teacher.reset_cost()
    assert teacher.cost.forward_passes == 0 and teacher.cost.prefix_tokens == prefix


def test_fingerprint_covers_weights_prompt_examples_and_mode(tiny_llm_dir, small_space, smollm_tokenizer):
    base = LLMTeacher(tiny_llm_dir, small_space, tokenizer=smollm_tokenizer)
    assert (
        LLMTeacher(tiny_llm_dir, small_space, batch_size=2, tokenizer=smollm_tokenizer).fingerprint
        == base.fingerprint
    )
    others = [
        LLMTeacher(tiny_llm_dir, small_space, mode="label_text", tokenizer=smollm_tokenizer),
        LLMTeacher(tiny_llm_dir, small_space, format="plain", tokenizer=smollm_tokenizer),
        LLMTeacher(tiny_llm_dir, small_space, code_style="sequential", tokenizer=smollm_tokenizer),
        LLMTeacher(
            tiny_llm_dir,
            small_space,
            examples=[Example("where is my card", "card_arrival")],
            tokenizer=smollm_tokenizer,
        ),
        LLMTeacher(tiny_llm_dir, small_space, instruction="Pick the intent.", tokenizer=smollm_tokenizer),
        LLMTeacher(tiny_llm_dir, LabelSpace(list(small_space.names)[::-1]), tokenizer=smollm_tokenizer),
    ]
    prints = {base.fingerprint, *(t.fingerprint for t in others)}
    assert len(prints) == len(others) + 1
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    in_memory = LLMTeacher(model, small_space, tokenizer=smollm_tokenizer)
    before = in_memory.fingerprint
    assert in_memory.fingerprint == before
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0
    assert in_memory.fingerprint != before


def test_examples_are_sampled_per_label_with_a_seed(tiny_llm_dir, small_space, smollm_tokenizer):
    pool = IntentDataset([Example(f"{n} example {j}", n) for n in small_space for j in range(4)])
    one = LLMTeacher(tiny_llm_dir, small_space, examples=pool, shots=1, seed=3, tokenizer=smollm_tokenizer)
    assert len(one.prompt.examples) == len(small_space)
    again = LLMTeacher(tiny_llm_dir, small_space, examples=pool, shots=1, seed=3, tokenizer=smollm_tokenizer)
    assert again.prompt.prefix == one.prompt.prefix
    budget = LLMTeacher(
        tiny_llm_dir, small_space, examples=pool, shots=2, example_budget=5, tokenizer=smollm_tokenizer
    )
    assert len(budget.prompt.examples) == 5
    assert len(budget.prefix_ids) > len(
        LLMTeacher(tiny_llm_dir, small_space, tokenizer=smollm_tokenizer).prefix_ids
    )


def test_bad_arguments_are_teacher_errors(tiny_llm_dir, small_space, smollm_tokenizer):
    with pytest.raises(TeacherError, match="needs a label space"):
        LLMTeacher(tiny_llm_dir)
    with pytest.raises(TeacherError, match="batch_size"):
        LLMTeacher(tiny_llm_dir, small_space, batch_size=0, tokenizer=smollm_tokenizer)
    with pytest.raises(TeacherError, match="tokenizer"):
        LLMTeacher(AutoModelForCausalLM.from_pretrained(tiny_llm_dir), small_space)


def test_llm_specs(tiny_llm_dir, small_space):
    teacher = load_teacher(f"llm:{tiny_llm_dir}?mode=label_text&normalise=true&batch_size=2", small_space)
    assert isinstance(teacher, LLMTeacher)
    assert teacher.mode == "label_text" and teacher.length_normalise and teacher.batch_size == 2
    pool = IntentDataset([Example(f"{n} example {j}", n) for n in small_space for j in range(3)])
    shots = load_teacher(f"llm:{tiny_llm_dir}?shots=2&seed=1", small_space, examples=pool)
    assert len(shots.prompt.examples) == 2 * len(small_space)
    cases = [
        (f"llm:{tiny_llm_dir}?shots=2", "no examples to draw from"),
        (f"llm:{tiny_llm_dir}?shots=two", "shots='two' is not an integer"),
        (f"llm:{tiny_llm_dir}?temperature=0", "unknown option 'temperature'"),
        (f"llm:{tiny_llm_dir}?mode=logits", "mode='logits' is not codes | label_text"),
        (f"llm:{tiny_llm_dir}?cache=maybe", "cache='maybe' is not true or false"),
        (f"llm:{tiny_llm_dir}?device=gpu", "option device: device 'gpu' is not a device name"),
        ("gpt:foo", "expected <kind>:<target>"),
        ("smollm2-135m", "expected <kind>:<target>"),
    ]
    for spec, message in cases:
        with pytest.raises(TeacherSpecError, match=message) as info:
            load_teacher(spec, small_space)
        assert "; fix: " in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TeacherSpecError, match="needs the label space"):
        load_teacher(f"llm:{tiny_llm_dir}")


def test_spec_devices_are_resolved(tiny_llm_dir, small_space, monkeypatch):
    """``auto`` reaches the teacher as a device torch knows; cuda without a GPU is a spec error."""
    teacher = load_teacher(f"llm:{tiny_llm_dir}?device=auto", small_space)
    assert teacher.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        TeacherSpecError, match=r"option device: device 'cuda:1', but torch sees no GPU; fix: "
    ):
        load_teacher(f"llm:{tiny_llm_dir}?device=cuda:1", small_space)


@pytest.mark.slow
def test_real_smollm2_prefix_cache_equals_the_full_prompt(small_space, texts):
    """The real protocol on the real model (30 layers, GQA, tied embeddings): cache == no cache."""
    teacher = LLMTeacher("smollm2-135m", small_space, batch_size=4)
    probs = teacher.predict_proba(texts[:3])
    np.testing.assert_allclose(probs, _reference_codes(teacher, texts[:3]), atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    assert teacher.cost.forward_passes == 2


def test_very_long_utterances_are_clipped(tiny_llm_dir, small_space, smollm_tokenizer):
    teacher = LLMTeacher(tiny_llm_dir, small_space, tokenizer=smollm_tokenizer, max_text_tokens=32)
    long = "my card " * 3000
    assert len(teacher.suffix_ids(long)) < 60
    np.testing.assert_allclose(
        teacher.predict_proba([long]), teacher.predict_proba(["my card " * 16]), atol=1e-6
    )
