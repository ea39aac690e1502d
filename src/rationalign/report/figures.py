"""Matplotlib figures as inline SVG strings (Agg/SVG canvases, no pyplot global state, no files).

Text stays text (``svg.fonttype = none``) so the figures are small and take the page's font; the XML
prolog, DOCTYPE and metadata are stripped because the SVG is embedded in HTML, and they carry URLs.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.figure import Figure

_PROLOG = re.compile(r"<\?xml.*?\?>|<!DOCTYPE.*?>|<metadata>.*?</metadata>", re.DOTALL)
_RC = {"svg.fonttype": "none", "svg.hashsalt": "rationalign", "font.size": 9}
BLUE, ORANGE, GREY = "#2f6db3", "#d9772b", "#9aa0a6"


def svg_string(fig: Figure) -> str:
    """The figure as an ``<svg>`` element (no prolog), ready to inline in HTML."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    svg = _PROLOG.sub("", buffer.getvalue()).strip()
    return re.sub(r"<svg ", '<svg class="figure" role="img" ', svg, count=1)


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width, height), dpi=96, layout="constrained")


def reliability_svg(bins: Sequence[Mapping[str, Any]], title: str = "Reliability diagram") -> str:
    """Bars of accuracy per confidence bin against the diagonal, with the bin counts underneath.

    ``bins``: dicts with ``lower``, ``upper``, ``count``, ``mean_confidence``, ``accuracy`` (the
    calibration module's ``ReliabilityBin.to_dict()``); empty bins are skipped.
    """
    with matplotlib.rc_context(_RC):
        fig = _figure(4.6, 4.4)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        full = [b for b in bins if b["count"] and not math.isnan(b["accuracy"])]
        width = [b["upper"] - b["lower"] for b in full]
        left = [b["lower"] for b in full]
        top.bar(
            left,
            [b["accuracy"] for b in full],
            width=width,
            align="edge",
            color=BLUE,
            edgecolor="white",
            label="accuracy",
        )
        # Mean confidence as a marker with a line down (or up) to the bar top: the gap reads the same
        # for over- and under-confident bins, where a shaded gap bar would hide inside the accuracy bar.
        centers = [(b["lower"] + b["upper"]) / 2 for b in full]
        top.vlines(
            centers,
            [b["accuracy"] for b in full],
            [b["mean_confidence"] for b in full],
            color=ORANGE,
            linewidth=2.5,
            label="gap",
        )
        top.plot(
            centers,
            [b["mean_confidence"] for b in full],
            "D",
            color=ORANGE,
            markersize=4,
            label="mean confidence",
        )
        top.plot([0, 1], [0, 1], "--", color=GREY, linewidth=1, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.set_title(title)
        top.legend(loc="upper left", frameon=False)
        bottom.bar(left, [b["count"] for b in full], width=width, align="edge", color=GREY, edgecolor="white")
        bottom.set_xlabel("confidence (max probability)")
        bottom.set_ylabel("examples")
        return svg_string(fig)


def history_svg(history: Sequence[Mapping[str, Any]]) -> str | None:
    """Training loss and validation accuracy per epoch; None without history."""
    if not history:
        return None
    with matplotlib.rc_context(_RC):
        fig = _figure(5.2, 2.8)
        ax = fig.subplots()
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        ax.plot(
            epochs, [h.get("train_loss", math.nan) for h in history], "o-", color=BLUE, label="train loss"
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel("train loss", color=BLUE)
        accuracy = [h.get("valid_accuracy") for h in history]
        if any(a is not None for a in accuracy):
            twin = ax.twinx()
            twin.plot(
                epochs,
                [math.nan if a is None else a for a in accuracy],
                "s--",
                color=ORANGE,
                label="valid accuracy",
            )
            twin.set_ylabel("valid accuracy", color=ORANGE)
        ax.set_title("Training history")
        return svg_string(fig)


def confusion_svg(pairs: Sequence[Mapping[str, Any]], top: int = 10) -> str | None:
    """Horizontal bars of the most confused (gold -> predicted) pairs; None when there are none."""
    pairs = list(pairs)[:top]
    if not pairs:
        return None
    with matplotlib.rc_context(_RC):
        fig = _figure(5.6, 0.35 * len(pairs) + 0.9)
        ax = fig.subplots()
        names = [f"{p['true_label']} \u2192 {p['predicted_label']}" for p in pairs][::-1]
        ax.barh(range(len(pairs)), [p["count"] for p in pairs][::-1], color=ORANGE)
        ax.set_yticks(range(len(pairs)), names)
        ax.set_xlabel("test examples")
        ax.set_title("Most confused pairs (gold \u2192 predicted)")
        return svg_string(fig)
