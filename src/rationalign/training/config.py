"""Training configuration (pydantic): every field is recorded in the run manifest."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rationalign.device import DEVICE_PATTERN
from rationalign.precision import Precision


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("minilm-l6", description="shipped short name or local HF folder of the backbone")
    pooling: Literal["mean", "cls", "last"] | None = Field(
        None, description="None: mean for encoders, last for LMs"
    )
    num_layers: int | None = Field(None, ge=1, description="keep only the first k layers (smaller student)")
    max_length: int = Field(64, ge=8, le=512, description="tokens per utterance (longer ones are truncated)")
    epochs: int = Field(
        10, ge=1, description="passes over the training split (early stopping may end sooner)"
    )
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps (overrides epochs)"
    )
    batch_size: int = Field(32, ge=1, description="training examples per optimizer step")
    eval_batch_size: int = Field(128, ge=1, description="utterances per forward pass when evaluating")
    lr: float = Field(5e-5, gt=0, description="peak AdamW learning rate of the backbone")
    head_lr: float | None = Field(1e-3, gt=0, description="learning rate of the new classification head")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and norms)")
    warmup_ratio: float = Field(
        0.1, ge=0, le=1, description="share of steps of linear warm-up, then linear decay"
    )
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    head_init: Literal["random", "prototype"] = Field(
        "prototype", description="prototype: head rows start as normalised class-mean sentence vectors"
    )
    prototype_scale: float = Field(
        20.0, gt=0, description="logit scale of the prototype head (a cosine temperature)"
    )
    patience: int = Field(3, ge=1, description="epochs without validation improvement before stopping")
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between resumable checkpoints")
    seed: int = Field(0, description="seeds head init, dropout and data order (runs are reproducible)")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto, cpu or cuda[:i]")
    precision: Precision = Field(
        "float32",
        description="bfloat16: autocast matmuls in training and in the run's evaluation (weights stay float32); "
        "2.5-3x faster on CPUs with AVX512-BF16/AMX, slower elsewhere",
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
