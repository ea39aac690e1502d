"""Prompts that ask an LLM for an intent: instruction + the FULL label space + examples + the utterance.

Two answer modes share one layout:

* ``codes``: every label gets a short code (``CA: card arrival``) that is ONE token of the LLM's tokenizer
  where the answer starts, so a single forward pass gives the distribution over all labels from the
  next-token logits restricted to the code tokens.
* ``label_text``: labels are listed by name and each name is scored as a continuation (slower; a check).

A prompt is split into a *prefix* (instruction, label list, in-context examples: identical for every
utterance, so its KV cache is computed once) and a *suffix* (the utterance and the answer cue). The split
point is a single newline after non-blank text, where byte-level BPE never merges across, so
``tokens(prefix) + tokens(suffix) == tokens(prefix + suffix)``; :class:`PromptBuilder` checks this.

Formats: ``chat`` renders the tokenizer's chat template (one user turn, generation prompt; the answer
starts right after ``<|im_start|>assistant\\n``, so codes are the no-space tokens ``CA``); ``plain`` is a
template-free text ending in ``Answer:`` (codes are the leading-space tokens `` CA``). ``auto`` picks chat
when the tokenizer has a template, the format an instruct model was tuned on. On SmolLM2-135M-Instruct
the quick check (100 test utterances per data set) found no difference beyond noise: both are at chance
level (BENCHMARKS.md, "Teachers: accuracy and cost"), so the choice rests on that argument, not on data.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import string
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.teachers.errors import TeacherError

Mode = Literal["codes", "label_text"]
Format = Literal["auto", "chat", "plain"]
CodeStyle = Literal["mnemonic", "sequential"]

DEFAULT_INSTRUCTION = "Classify the user's message into exactly one of the intents listed below."
_CODES_RULE = "Each intent has a two-letter code. Reply with the code of the best intent and nothing else."
_TEXT_RULE = "Reply with the name of the best intent and nothing else."

# Two-letter codes that are common English words or abbreviations: the model has strong priors on them
# that have nothing to do with the label list, so they are never used as codes.
_CODE_STOPLIST = frozenset(
    [
        "AM",
        "AN",
        "AS",
        "AT",
        "BE",
        "BY",
        "DO",
        "GO",
        "HE",
        "HI",
        "IF",
        "IN",
        "IS",
        "IT",
        "ME",
        "MY",
        "NO",
        "OF",
        "OH",
        "OK",
        "ON",
        "OR",
        "SO",
        "TO",
        "UP",
        "US",
        "WE",
        "ID",
        "PM",
        "AI",
        "TV",
        "PC",
        "UK",
        "EU",
        "UN",
        "VS",
        "OS",
        "IO",
        "EX",
        "YE",
        "YO",
        "OX",
        "AX",
        "MA",
        "PA",
    ]
)
_SENTINEL = "\u0000RATIONALIGN_UTTERANCE\u0000"


def readable_label(name: str) -> str:
    """``card_arrival`` -> ``card arrival``; ``Refund_not_showing_up`` -> ``refund not showing up``."""
    text = re.sub(r"[_\-.]+", " ", name)
    text = re.sub(r"\s+", " ", text).strip()
    return text.lower() if text else name


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt_start(tokenizer, text: str) -> list[int]:
    """Token ids of the START of a prompt: the tokenizer's BOS is added unless the text already begins with
    it (chat templates write it themselves). The local teachers and :mod:`rationalign.teachers.server` use
    this one rule, as llama.cpp does, so the same text always gives the same ids."""
    bos = tokenizer.bos_token
    add = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


def clip_text(tokenizer, text: str, max_tokens: int | None) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (at a token boundary), so one pathological utterance
    cannot blow past the model's context; short texts come back unchanged."""
    if max_tokens is None:
        return text
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_tokens:
        return text
    return text[: enc["offset_mapping"][max_tokens - 1][1]]


# --------------------------------------------------------------------------------------------- codes


@dataclass(frozen=True)
class LabelCodes:
    """One code per label (label-space order), the code's token id and how it appears in the answer."""

    codes: tuple[str, ...]
    token_ids: tuple[int, ...]
    answer_prefix: str  # "" (chat: answer starts after a newline) or " " (plain: after "Answer:")

    def answer_token(self, i: int) -> str:
        """The text the model emits for label ``i`` (what a server's ``top_logprobs`` names)."""
        return self.answer_prefix + self.codes[i]

    def __len__(self) -> int:
        return len(self.codes)


def _single_token(tokenizer, cue: str, piece: str) -> int | None:
    """Token id of ``piece`` if ``cue + piece`` tokenizes as ``tokens(cue) + [one token]``, else None."""
    base = _encode(tokenizer, cue)
    full = _encode(tokenizer, cue + piece)
    if len(full) == len(base) + 1 and full[: len(base)] == base:
        return full[-1]
    return None


# tokenizer -> {(cue, answer_prefix): pool}: building a pool costs ~1,300 tokenizer calls.
_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def code_pool(tokenizer, cue: str, answer_prefix: str) -> list[tuple[str, int]]:
    """All usable two-capital-letter codes, in alphabetical order, with their token ids.

    A code is usable when ``answer_prefix + code`` is one token right after ``cue`` (the exact end of the
    prompt), is not a common word (stop list), and has a token id distinct from every other code.
    """
    try:
        memo = _POOLS.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: no memo
        memo = {}
    key = (cue, answer_prefix)
    if key not in memo:
        memo[key] = _code_pool(tokenizer, cue, answer_prefix)
    return list(memo[key])


def _code_pool(tokenizer, cue: str, answer_prefix: str) -> list[tuple[str, int]]:
    pool: list[tuple[str, int]] = []
    seen: set[int] = set()
    for a, b in itertools.product(string.ascii_uppercase, repeat=2):
        code = a + b
        if code in _CODE_STOPLIST:
            continue
        tid = _single_token(tokenizer, cue, answer_prefix + code)
        if tid is None or tid in seen:
            continue
        seen.add(tid)
        pool.append((code, tid))
    return pool


def _mnemonic_candidates(name: str) -> list[str]:
    words = [w for w in re.split(r"[^A-Za-z]+", name.upper()) if w]
    if not words:
        return []
    cands = []
    if len(words) >= 2:
        cands += [words[0][0] + w[0] for w in words[1:]]
    first = words[0]
    cands += [first[0] + c for c in first[1:]]
    rest = "".join(words[1:])
    cands += [first[0] + c for c in rest]
    letters = "".join(words)
    cands += [a + b for a, b in itertools.combinations(letters, 2)]
    return list(dict.fromkeys(cands))


def assign_codes(
    tokenizer,
    label_space: LabelSpace,
    *,
    cue: str,
    answer_prefix: str,
    style: CodeStyle = "mnemonic",
) -> LabelCodes:
    """Give every label a distinct single-token code, deterministically (label-space order).

    ``mnemonic``: the first usable of the name's initials (``card_arrival`` -> ``CA``), first letter plus
    another letter of the name, any ordered letter pair of the name; else the first free code of the pool.
    ``sequential``: the pool in alphabetical order (``AA``, ``AB``, ...).
    """
    pool = code_pool(tokenizer, cue, answer_prefix)
    if len(pool) < len(label_space):
        raise TeacherError(
            f"the tokenizer has only {len(pool)} single-token two-letter codes but the label space has "
            f"{len(label_space)} labels; fix: use mode='label_text' for this model"
        )
    ids = dict(pool)
    taken: set[str] = set()
    chosen: list[str] = []
    free = iter(code for code, _ in pool)
    for name in label_space:
        code = None
        if style == "mnemonic":
            code = next((c for c in _mnemonic_candidates(name) if c in ids and c not in taken), None)
        if code is None:
            code = next(c for c in free if c not in taken)
        taken.add(code)
        chosen.append(code)
    return LabelCodes(tuple(chosen), tuple(ids[c] for c in chosen), answer_prefix)


# ---------------------------------------------------------------------------------------- examples


def select_examples(
    examples: IntentDataset | Sequence[Example],
    label_space: LabelSpace,
    *,
    shots: int | None = 1,
    budget: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """In-context examples: up to ``shots`` per label, at most ``budget`` in all, seeded.

    With a budget smaller than ``shots * |Y|``, labels are visited round-robin in a seeded order, so every
    label gets one example before any gets two. The result is shuffled (seeded) so that no label always
    sits right before the utterance.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7341]))
    by_label: dict[str, list[Example]] = {}
    for ex in examples:
        if ex.label not in label_space:
            raise TeacherError(
                f"in-context example {ex.text!r} has label {ex.label!r} outside the teacher's label space; "
                "fix: pass examples from the same data set"
            )
        by_label.setdefault(ex.label, []).append(ex)
    per_label = shots if shots is not None else max((len(v) for v in by_label.values()), default=0)
    picked: dict[str, list[Example]] = {}
    for label in label_space:
        pool = by_label.get(label, [])
        order = rng.permutation(len(pool))[:per_label] if pool else []
        picked[label] = [pool[i] for i in order]
    labels = [label_space.name(i) for i in rng.permutation(len(label_space))]
    chosen: list[Example] = []
    for round_ in range(per_label):
        for label in labels:
            if round_ < len(picked[label]):
                chosen.append(picked[label][round_])
    if budget is not None:
        chosen = chosen[:budget]
    return [chosen[i] for i in rng.permutation(len(chosen))]


# ------------------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class BuiltPrompt:
    """A prompt split into a shared prefix and a per-utterance suffix (``suffix_template`` has ``{text}``)."""

    prefix: str
    suffix_template: str
    mode: Mode
    format: Literal["chat", "plain"]
    label_space: LabelSpace
    codes: LabelCodes | None
    answer_texts: tuple[str, ...]  # label_text mode: what each label's answer looks like (incl. end)
    examples: tuple[Example, ...] = field(default=())

    def suffix(self, text: str) -> str:
        # The utterance is inserted verbatim apart from newlines (which would break the layout).
        clean = " ".join(text.split())
        return self.suffix_template.replace("{text}", clean)

    def full(self, text: str) -> str:
        return self.prefix + self.suffix(text)

    def describe(self) -> dict:
        """Everything that defines the prompt, for fingerprints."""
        return {
            "prefix": self.prefix,
            "suffix": self.suffix_template,
            "mode": self.mode,
            "format": self.format,
            "labels": list(self.label_space.names),
            "codes": list(self.codes.codes) if self.codes else None,
            "code_ids": list(self.codes.token_ids) if self.codes else None,
            "answers": list(self.answer_texts),
        }

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()


class PromptBuilder:
    """Build the prompt for one tokenizer and label space (see the module docstring for the layout)."""

    def __init__(
        self,
        tokenizer,
        label_space: LabelSpace,
        *,
        mode: Mode = "codes",
        format: Format = "auto",
        instruction: str = DEFAULT_INSTRUCTION,
        examples: Sequence[Example] = (),
        code_style: CodeStyle = "mnemonic",
    ):
        if mode not in ("codes", "label_text"):
            raise TeacherError(f"unknown prompt mode {mode!r}; fix: use 'codes' or 'label_text'")
        if format not in ("auto", "chat", "plain"):
            raise TeacherError(f"unknown prompt format {format!r}; fix: use 'auto', 'chat' or 'plain'")
        if format == "auto":
            format = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
        if format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise TeacherError(
                "format='chat' but the tokenizer has no chat template; fix: use format='plain'"
            )
        self.tokenizer = tokenizer
        self.label_space = label_space
        self.mode: Mode = mode
        self.format: Literal["chat", "plain"] = format
        self.instruction = instruction.strip()
        self.examples = tuple(examples)
        self.code_style: CodeStyle = code_style

    # The body of the user turn; {codes or names} list, examples, then the sentinel where the suffix starts.
    def _body(self, codes: LabelCodes | None) -> str:
        names = [readable_label(n) for n in self.label_space]
        if codes is not None:
            listing = [f"{c}: {n}" for c, n in zip(codes.codes, names, strict=True)]
            rule = _CODES_RULE
        else:
            listing = [f"- {n}" for n in names]
            rule = _TEXT_RULE
        lines = [f"{self.instruction} {rule}", "", "Intents:", *listing]
        if self.examples:
            lines += ["", "Examples:"]
            for ex in self.examples:
                i = self.label_space.id(ex.label)
                answer = codes.codes[i] if codes is not None else names[i]
                lines += [f"Message: {' '.join(ex.text.split())}", f"Answer: {answer}"]
        # The prefix ends with one newline after text: a stable token boundary (see module docstring).
        return "\n".join(lines) + "\n" + _SENTINEL + "Message: {text}"

    def _render(self, body: str) -> tuple[str, str]:
        if self.format == "chat":
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = body + "\nAnswer:"
        prefix, suffix = text.split(_SENTINEL)
        return prefix, suffix

    def build(self) -> BuiltPrompt:
        answer_prefix = "" if self.format == "chat" else " "
        # The cue is the exact end of the prompt, so codes are checked as tokens right where they appear.
        _, probe_suffix = self._render(self._body(None))
        cue = probe_suffix.replace("{text}", "hello")
        codes = None
        if self.mode == "codes":
            codes = assign_codes(
                self.tokenizer, self.label_space, cue=cue, answer_prefix=answer_prefix, style=self.code_style
            )
        prefix, suffix_template = self._render(self._body(codes))
        end = self._turn_end() if self.format == "chat" else "\n"
        answers = tuple(answer_prefix + readable_label(n) + end for n in self.label_space)
        built = BuiltPrompt(
            prefix, suffix_template, self.mode, self.format, self.label_space, codes, answers, self.examples
        )
        self._check_boundary(built)
        return built

    def _turn_end(self) -> str:
        """What the chat template writes after an assistant answer (``<|im_end|>`` for ChatML): the end
        of a label's text in ``label_text`` mode. Read from the template, not from ``eos_token`` (which
        some converted tokenizers get wrong)."""
        marker = "XQZ"
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": "u"}, {"role": "assistant", "content": marker}], tokenize=False
        )
        after = text.split(marker, 1)[1]
        return after.split("\n", 1)[0] or "\n"

    def _check_boundary(self, built: BuiltPrompt) -> None:
        probe = "how do I check my balance?"
        ids = encode_prompt_start(self.tokenizer, built.full(probe))
        split = encode_prompt_start(self.tokenizer, built.prefix) + _encode(
            self.tokenizer, built.suffix(probe)
        )
        if ids != split:
            raise TeacherError(
                "the prompt's prefix and suffix do not tokenize independently with this tokenizer; "
                "fix: use format='plain' or an instruction that ends with a full sentence"
            )
