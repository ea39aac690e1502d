"""Training configuration (pydantic): every field is recorded in the run manifest."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("minilm-l6", description="shipped short name or local HF folder of the backbone")
    pooling: Literal["mean", "cls", "last"] | None = Field(
        None, description="None: mean for encoders, last for LMs"
    )
    num_layers: int | None = Field(None, ge=1, description="keep only the first k layers (smaller student)")
    max_length: int = Field(64, ge=8, le=512)
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps (overrides epochs)"
    )
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    lr: float = Field(5e-5, gt=0)
    head_lr: float | None = Field(1e-3, gt=0, description="learning rate of the new classification head")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    head_init: Literal["random", "prototype"] = Field(
        "prototype", description="prototype: head rows start as normalised class-mean sentence vectors"
    )
    prototype_scale: float = Field(
        20.0, gt=0, description="logit scale of the prototype head (a cosine temperature)"
    )
    patience: int = Field(3, ge=1, description="epochs without validation improvement before stopping")
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between resumable checkpoints")
    seed: int = 0
    device: str = Field("auto", description="auto, cpu or cuda[:i]")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
