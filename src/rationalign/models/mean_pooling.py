"""A mean-pooled sequence classifier over any Hugging Face encoder, saved with its own source.

Sentence-embedding encoders (all-MiniLM-L6-v2, all-mpnet-base-v2) were trained with mean pooling, so a
mean-pooled head starts from a useful sentence vector; HF's native heads pool the first token instead.
``MODELING_SOURCE`` is written next to the weights as ``modeling_rationalign.py`` with an ``auto_map``
entry, so ``AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)`` loads the
exact class used in training. Inside rationalign the same source is executed, so there is one definition.
"""

from __future__ import annotations

import functools
import types

MODELING_FILE = "modeling_rationalign.py"
CLASS_NAME = "MeanPooledForSequenceClassification"

MODELING_SOURCE = '''\
"""Mean-pooled sequence classifier written by rationalign (load with trust_remote_code=True)."""
import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import {config_class} as BackboneConfig
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPooledForSequenceClassification(PreTrainedModel):
    config_class = BackboneConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = AutoModel.from_config(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.backbone.set_input_embeddings(value)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           return_dict=True)
        hidden = out.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)
'''


def modeling_source(config_class_name: str) -> str:
    return MODELING_SOURCE.format(config_class=config_class_name)


@functools.cache
def mean_pooled_class(config_class_name: str) -> type:
    """The classifier class for one backbone config class (e.g. ``BertConfig``), built from the source."""
    module = types.ModuleType(f"rationalign_mean_pooled_{config_class_name}")
    exec(compile(modeling_source(config_class_name), module.__name__, "exec"), module.__dict__)
    return getattr(module, CLASS_NAME)
