"""The causal GPT-2-style backbone (a `transformers` GPT2Config model, eager attention, no
dropout) and a sequence classifier that reads the last token's hidden state.

Eager attention: CPU SDPA has no forward-mode autodiff, so `torch.func.jvp` needs it. No 2-D
attention mask is passed (it breaks `vmap` in transformers 5.x): documents are right-padded, so
under causal attention the last real token never sees a pad token and no mask is needed; where
one is needed, `additive_causal_mask` gives the 4-D additive float form.
"""

from __future__ import annotations

import torch
from torch import nn

from tasks.small_lm.config import BackboneConfig


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """Return a freshly initialised `GPT2LMHeadModel` of these sizes (vocab_size + 1 tokens, the
    last one the pad token), eager attention, dropout 0, in eval mode. No pad_token_id is set:
    transformers' padding warning inspects the ids with data-dependent control flow, which
    `vmap` rejects."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the bos/eos ids of a custom vocabulary are not used
    config = GPT2Config(vocab_size=cfg.vocab_size + 1, n_positions=cfg.seq_len,
                        n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
                        n_inner=cfg.d_ff, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=None, eos_token_id=None, pad_token_id=None,
                        attn_implementation="eager")
    return GPT2LMHeadModel(config).eval()


def additive_causal_mask(lengths: torch.Tensor, seq_len: int,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return the (n, 1, T, T) additive mask: 0 where query t may attend key s (s ≤ t and
    s < length), the dtype's minimum elsewhere (bit-identical to transformers' own masking)."""
    pos = torch.arange(seq_len, device=lengths.device)
    allowed = (pos[None, :, None] >= pos[None, None, :]) & (pos[None, None, :] < lengths[:, None, None])
    mask = torch.zeros(allowed.shape, dtype=dtype, device=lengths.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def last_positions(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Return the index of each row's last real token, (number of non-pad tokens) − 1."""
    return (tokens != pad_id).sum(dim=-1) - 1


class SequenceClassifier(nn.Module):
    """logits = head(h_last): the transformer (GPT2Model) of a pretrained LM, the hidden state
    of each sequence's last real token, a linear head. Input: token ids (n, T), right-padded."""

    def __init__(self, transformer: nn.Module, n_classes: int, pad_id: int) -> None:
        super().__init__()
        self.transformer = transformer
        d = transformer.config.n_embd
        self.head = nn.Linear(d, n_classes)
        self.pad_id = int(pad_id)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return h_last (n, d): the final (layer-normed) hidden state at each last position."""
        h = self.transformer(input_ids=tokens).last_hidden_state  # (n, T, d)
        last = last_positions(tokens, self.pad_id)
        index = last.reshape(-1, 1, 1).expand(-1, 1, h.shape[-1])
        return h.gather(1, index).squeeze(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return the class logits (n, C)."""
        return self.head(self.features(tokens))
