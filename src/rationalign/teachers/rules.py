"""``RuleSet``: hand-written regex rules that pin a label (domain knowledge the teachers may miss).

YAML layout (rules are tried in file order; the first rule with a matching pattern wins)::

    epsilon: 0.05            # a hit puts 1 - epsilon on the rule's label
    rules:
      - label: card_arrival
        patterns: ['\\bwhere is my (new )?card\\b', 'card (has not|hasn.t) (come|arrived)']
      - label: lost_or_stolen_card
        patterns: ['\\bstolen\\b']
        case_sensitive: false  # default

A hit replaces a teacher's distribution p by ``(1 - eps) * onehot(label) + eps * q`` where q is p without
the rule's label, renormalised (uniform if p had all its mass there): the student still sees which other
labels the teachers found plausible.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from rationalign.data.types import LabelSpace
from rationalign.errors import located
from rationalign.teachers.errors import TeacherError, TeacherSpecError


@dataclass(frozen=True)
class Rule:
    label: str
    patterns: tuple[str, ...]
    case_sensitive: bool = False
    line: int | None = None  # where the rule was defined, for error messages

    def compiled(self) -> list[re.Pattern]:
        flags = 0 if self.case_sensitive else re.IGNORECASE
        return [re.compile(p, flags) for p in self.patterns]


class RuleSet:
    """Ordered regex rules -> label; see the module docstring for the file format and the override."""

    def __init__(self, rules: Sequence[Rule], epsilon: float = 0.05, source: str | None = None):
        if not 0.0 <= epsilon < 1.0:
            raise TeacherSpecError(
                located(source or "rules", None, f"epsilon must be in [0, 1), got {epsilon}", "use e.g. 0.05")
            )
        self.rules = tuple(rules)
        self.epsilon = float(epsilon)
        self.source = source
        self._compiled: list[tuple[str, list[re.Pattern]]] = []
        for rule in self.rules:
            if not rule.patterns:
                raise TeacherSpecError(
                    located(
                        source or "rules",
                        rule.line,
                        f"rule for {rule.label!r} has no patterns",
                        "give it a 'patterns' list of regular expressions",
                    )
                )
            try:
                self._compiled.append((rule.label, rule.compiled()))
            except re.error as err:
                raise TeacherSpecError(
                    located(
                        source or "rules",
                        rule.line,
                        f"bad regular expression for {rule.label!r}: {err}",
                        "fix the pattern (YAML single quotes keep backslashes)",
                    )
                ) from None

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def from_yaml(cls, path: str | Path, label_space: LabelSpace | None = None) -> RuleSet:
        path = Path(path)
        if not path.is_file():
            raise TeacherSpecError(located(path, None, "no such rules file", "check the path"))
        text = path.read_text(encoding="utf-8")
        try:
            root = yaml.compose(text)  # nodes keep their line numbers
        except yaml.YAMLError as err:
            line = err.problem_mark.line + 1 if getattr(err, "problem_mark", None) else None
            raise TeacherSpecError(
                located(path, line, f"not valid YAML ({getattr(err, 'problem', err)})", "fix the syntax")
            ) from None
        if not isinstance(root, yaml.MappingNode):
            raise TeacherSpecError(
                located(
                    path,
                    1,
                    "expected a mapping with a 'rules' list",
                    "write 'rules:' then '- label: ... patterns: [...]' items",
                )
            )
        top = {k.value: v for k, v in root.value}
        unknown = sorted(set(top) - {"epsilon", "rules"})
        if unknown:
            raise TeacherSpecError(
                located(
                    path,
                    root.start_mark.line + 1,
                    f"unknown keys {unknown}",
                    "use only 'epsilon' and 'rules'",
                )
            )
        epsilon = 0.05
        if "epsilon" in top:
            try:
                epsilon = float(yaml.safe_load(yaml.serialize(top["epsilon"])))
            except (TypeError, ValueError):
                raise TeacherSpecError(
                    located(
                        path,
                        top["epsilon"].start_mark.line + 1,
                        "epsilon is not a number",
                        "write e.g. 'epsilon: 0.05'",
                    )
                ) from None
        rules_node = top.get("rules")
        if not isinstance(rules_node, yaml.SequenceNode):
            line = rules_node.start_mark.line + 1 if rules_node is not None else 1
            raise TeacherSpecError(
                located(path, line, "'rules' must be a list", "write '- label: ...' items")
            )
        rules = [cls._rule(path, node, label_space) for node in rules_node.value]
        return cls(rules, epsilon, str(path))

    @staticmethod
    def _rule(path: Path, node: yaml.Node, label_space: LabelSpace | None) -> Rule:
        line = node.start_mark.line + 1
        data = yaml.safe_load(yaml.serialize(node))
        if not isinstance(data, dict) or not isinstance(data.get("label"), str):
            raise TeacherSpecError(
                located(
                    path,
                    line,
                    "a rule needs a 'label' string",
                    "write '- label: <name>' with 'patterns: [...]'",
                )
            )
        unknown = sorted(set(data) - {"label", "patterns", "case_sensitive"})
        if unknown:
            raise TeacherSpecError(
                located(path, line, f"unknown rule keys {unknown}", "use label, patterns, case_sensitive")
            )
        patterns = data.get("patterns")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise TeacherSpecError(
                located(
                    path,
                    line,
                    f"rule for {data['label']!r}: 'patterns' must be a list of strings",
                    "write patterns: ['regex', ...]",
                )
            )
        if label_space is not None and data["label"] not in label_space:
            raise TeacherSpecError(
                located(
                    path,
                    line,
                    f"label {data['label']!r} is not in the label space ({len(label_space)} labels)",
                    "use one of the data set's labels",
                )
            )
        return Rule(data["label"], tuple(patterns), bool(data.get("case_sensitive", False)), line)

    # ------------------------------------------------------------------------------------ applying
    def check(self, label_space: LabelSpace) -> None:
        for rule in self.rules:
            if rule.label not in label_space:
                raise TeacherError(
                    located(
                        self.source or "rules",
                        rule.line,
                        f"rule label {rule.label!r} is not in the teacher's label space",
                        "use one of the data set's labels",
                    )
                )

    def match(self, text: str) -> str | None:
        for label, patterns in self._compiled:
            if any(p.search(text) for p in patterns):
                return label
        return None

    def apply(
        self, texts: Sequence[str], probs: np.ndarray, label_space: LabelSpace
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (probs with rule hits overridden, boolean hit mask)."""
        self.check(label_space)
        out = np.array(probs, dtype=np.float64, copy=True)
        hits = np.zeros(len(texts), dtype=bool)
        for i, text in enumerate(texts):
            label = self.match(text)
            if label is None:
                continue
            j = label_space.id(label)
            rest = out[i].copy()
            rest[j] = 0.0
            total = rest.sum()
            if total > 0:
                rest /= total
            else:
                rest = np.full(len(rest), 1.0 / max(len(rest) - 1, 1))
                rest[j] = 0.0
            out[i] = self.epsilon * rest
            out[i, j] = 1.0 - self.epsilon
            if len(label_space) == 1:
                out[i, j] = 1.0
            hits[i] = True
        return out, hits

    @property
    def fingerprint(self) -> str:
        spec = {
            "epsilon": self.epsilon,
            "rules": [[r.label, list(r.patterns), r.case_sensitive] for r in self.rules],
        }
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.rules)
