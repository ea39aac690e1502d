"""Prompt building: single-token codes, full label list, stable prefix/suffix split, seeded examples."""

from __future__ import annotations

import pytest

from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.teachers.errors import TeacherError
from rationalign.teachers.prompt import (
    PromptBuilder,
    encode_prompt_start,
    readable_label,
    select_examples,
)

NASTY_TEXTS = [
    "hello",
    "  leading and trailing spaces  ",
    "multi\nline\r\ntext",
    "émojis 🙂 and accents: café",
    "code: AB? answer CA!",
    "ends with a newline\n",
    "Message: fake cue\nAnswer: CA",
    "tab\tseparated",
    "!!!",
]


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_readable_label():
    assert readable_label("card_arrival") == "card arrival"
    assert readable_label("Refund_not_showing_up") == "refund not showing up"
    assert readable_label("iot-hue__lightoff") == "iot hue lightoff"
    assert readable_label("translate") == "translate"


@pytest.mark.parametrize("fmt", ["chat", "plain"])
def test_codes_are_single_tokens_right_where_the_answer_starts(smollm_tokenizer, small_space, fmt):
    prompt = PromptBuilder(smollm_tokenizer, small_space, format=fmt).build()
    codes = prompt.codes
    assert codes is not None and len(codes) == len(small_space)
    assert len(set(codes.codes)) == len(small_space) and len(set(codes.token_ids)) == len(small_space)
    for text in NASTY_TEXTS[:3]:
        base = encode_prompt_start(smollm_tokenizer, prompt.full(text))
        for i in range(len(codes)):
            full = encode_prompt_start(smollm_tokenizer, prompt.full(text) + codes.answer_token(i))
            assert full == [*base, codes.token_ids[i]], (fmt, codes.codes[i])
    assert codes.answer_prefix == ("" if fmt == "chat" else " ")


def test_code_assignment_is_deterministic_and_mnemonic(smollm_tokenizer, small_space):
    a = PromptBuilder(smollm_tokenizer, small_space).build()
    b = PromptBuilder(smollm_tokenizer, small_space).build()
    assert a.codes == b.codes and a.prefix == b.prefix and a.fingerprint == b.fingerprint
    codes = dict(zip(small_space.names, a.codes.codes, strict=True))
    assert codes["card_arrival"] == "CA"
    assert codes["top_up_failed"][0] == "T" and codes["pin_blocked"][0] == "P"
    seq = PromptBuilder(smollm_tokenizer, small_space, code_style="sequential").build().codes.codes
    assert list(seq) == sorted(seq) and seq[0] == "AA"


def test_150_labels_get_150_distinct_single_token_codes(smollm_tokenizer):
    space = LabelSpace([f"intent_{i:03d}_{w}" for i, w in enumerate(["alpha", "beta", "gamma"] * 50)])
    prompt = PromptBuilder(smollm_tokenizer, space).build()
    assert len(set(prompt.codes.codes)) == 150 == len(set(prompt.codes.token_ids))
    cue = prompt.full("hi")
    base = _ids(smollm_tokenizer, cue)
    for code, tid in zip(prompt.codes.codes, prompt.codes.token_ids, strict=True):
        assert _ids(smollm_tokenizer, cue + code) == [*base, tid]
        assert code not in {"IN", "IT", "OK", "ON", "TO"}


def test_too_many_labels_for_two_letter_codes_is_a_clear_error(smollm_tokenizer):
    space = LabelSpace([f"label_{i}" for i in range(700)])
    with pytest.raises(TeacherError, match=r"single-token two-letter codes.*fix: use mode='label_text'"):
        PromptBuilder(smollm_tokenizer, space).build()


@pytest.mark.parametrize("fmt", ["chat", "plain"])
@pytest.mark.parametrize("mode", ["codes", "label_text"])
def test_prefix_and_suffix_tokenize_independently(smollm_tokenizer, small_space, fmt, mode):
    examples = [Example("where is my card", "card_arrival"), Example("pin locked", "pin_blocked")]
    prompt = PromptBuilder(smollm_tokenizer, small_space, format=fmt, mode=mode, examples=examples).build()
    prefix = encode_prompt_start(smollm_tokenizer, prompt.prefix)
    for text in NASTY_TEXTS:
        assert encode_prompt_start(smollm_tokenizer, prompt.full(text)) == prefix + _ids(
            smollm_tokenizer, prompt.suffix(text)
        ), repr(text)


def test_prompt_lists_the_full_label_space_and_the_utterance(smollm_tokenizer, small_space):
    prompt = PromptBuilder(smollm_tokenizer, small_space).build()
    assert prompt.format == "chat"  # SmolLM2-Instruct has a chat template
    assert prompt.prefix.startswith("<|im_start|>")
    for code, name in zip(prompt.codes.codes, small_space.names, strict=True):
        assert f"\n{code}: {readable_label(name)}\n" in prompt.prefix
    full = prompt.full("where is my\ncard")
    assert "Message: where is my card<|im_end|>" in full  # newlines in the text are flattened
    assert full.endswith("<|im_start|>assistant\n")
    plain = PromptBuilder(smollm_tokenizer, small_space, format="plain").build()
    assert plain.full("x").endswith("Message: x\nAnswer:") and "<|im_start|>" not in plain.prefix


def test_label_text_mode_lists_names_and_scores_them_with_the_turn_end(smollm_tokenizer, small_space):
    prompt = PromptBuilder(smollm_tokenizer, small_space, mode="label_text").build()
    assert prompt.codes is None
    assert "- card arrival\n" in prompt.prefix and "CA:" not in prompt.prefix
    assert prompt.answer_texts[0] == "card arrival<|im_end|>"
    plain = PromptBuilder(smollm_tokenizer, small_space, mode="label_text", format="plain").build()
    assert plain.answer_texts[0] == " card arrival\n"


def test_examples_go_in_the_prefix_with_their_codes(smollm_tokenizer, small_space):
    examples = [Example("my card never came", "card_arrival")]
    prompt = PromptBuilder(smollm_tokenizer, small_space, examples=examples).build()
    assert "Message: my card never came\nAnswer: CA\n" in prompt.prefix
    assert prompt.fingerprint != PromptBuilder(smollm_tokenizer, small_space).build().fingerprint


def _pool(space: LabelSpace, per_label: int) -> IntentDataset:
    return IntentDataset([Example(f"{name} text {j}", name) for name in space for j in range(per_label)])


def test_select_examples_per_label_budget_and_seed(small_space):
    pool = _pool(small_space, 5)
    two = select_examples(pool, small_space, shots=2, seed=0)
    assert len(two) == 16
    assert all(sum(e.label == name for e in two) == 2 for name in small_space)
    assert select_examples(pool, small_space, shots=2, seed=0) == two
    assert select_examples(pool, small_space, shots=2, seed=1) != two
    budget = select_examples(pool, small_space, shots=2, budget=5, seed=0)
    assert len(budget) == 5 and len({e.label for e in budget}) == 5  # round-robin: distinct labels first
    scarce = IntentDataset([Example("only one", "card_arrival")])
    assert select_examples(scarce, small_space, shots=3) == [Example("only one", "card_arrival")]


def test_select_examples_rejects_labels_outside_the_space(small_space):
    with pytest.raises(TeacherError, match="outside the teacher's label space; fix:"):
        select_examples([Example("hello", "greeting")], small_space, shots=1)


def test_bad_mode_and_format_are_clear_errors(smollm_tokenizer, small_space):
    with pytest.raises(TeacherError, match="unknown prompt mode"):
        PromptBuilder(smollm_tokenizer, small_space, mode="logits")
    with pytest.raises(TeacherError, match="unknown prompt format"):
        PromptBuilder(smollm_tokenizer, small_space, format="markdown")


def test_clip_text_cuts_long_utterances_at_a_token_boundary(smollm_tokenizer):
    from rationalign.teachers.prompt import clip_text

    assert clip_text(smollm_tokenizer, "short text", 256) == "short text"
    long = " ".join(f"word{i}" for i in range(500))
    cut = clip_text(smollm_tokenizer, long, 50)
    assert long.startswith(cut) and len(_ids(smollm_tokenizer, cut)) == 50
    assert clip_text(smollm_tokenizer, long, None) == long
