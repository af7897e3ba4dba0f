"""The character-level Mamba model: embedding -> n_layer x [RMSNorm -> mixer -> + residual] -> RMSNorm -> heads.

Glossary: B batch, L length, D d_model, E d_inner, N d_state, K d_conv, C channels, V vocab.

One class serves every task (Mamba paper section 3.4; heads as in state-spaces/mamba's MambaLMHeadModel):
- `forward(tokens)` -> next-token logits from the LM head, tied to the embedding (one table and one head per
  channel for multichannel time series: tokens (B, L, C) -> logits (B, L, C, V); tokens (B, L) -> (B, L, V)).
- `classify(tokens, mask)` -> (B, n_classes) from the mean of the final hidden states over valid positions.
- `embed(tokens)` -> final hidden states (B, L, D), for embeddings.
- `allocate_cache(batch)`, `forward(tokens, cache=cache)` (prefill or the next chunk of a stream) and
  `step(token, cache)` (one token): the recurrent view of a causal model, O(1) memory per step.

The residual stream stays in float32 (float64 for a float64 model) whatever the layers' dtype, as mamba_ssm's
`residual_in_fp32`: summing n_layer small updates in bf16 loses them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseq.config import ModelConfig
from mambaseq.model.mixer import MambaMixer


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 (or float64), returned in the weight's dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x if x.dtype == torch.float64 else x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return out.to(self.weight.dtype)


class Block(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = MambaMixer(cfg)

    def forward(self, x, resets=None, state=None):
        """x (B, L, D) residual stream -> same, and the mixer's new state when `state` is given."""
        if state is None:
            return x + self.mixer(self.norm(x), resets)
        out, state = self.mixer(self.norm(x), resets, state)
        return x + out, state


@dataclass
class InferenceCache:
    """Recurrent state of a causal model, per layer: the last K-1 conv inputs and the SSM state.

    It carries no gradient: a forward pass stores detached states, so streaming never grows a graph.
    """

    conv: list[torch.Tensor]  # n_layer x (B, E, K-1), the layers' dtype
    ssm: list[torch.Tensor]  # n_layer x (B, E, N), float32 (float64 for a float64 model)

    def reset(self, rows: torch.Tensor) -> None:
        """Zero the state of the rows (B,) bool that start a new sequence."""
        for t in self.conv + self.ssm:
            t[rows] = 0


class MambaModel(nn.Module):
    """Backbone plus a tied LM head and an optional classification head (config.n_classes > 0)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        # one (V, D) table per channel, stored as one (C*V, D) matrix: channel c's ids are offset by c*V, and
        # the tied head F.linear(h, weight) yields every channel's logits at once with no aliased tensor
        self.embedding = nn.Embedding(cfg.n_channels * cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.classifier = nn.Linear(cfg.d_model, cfg.n_classes) if cfg.n_classes else None
        # mamba_ssm's _init_weights: small embeddings; out_proj scaled by 1/sqrt(n_layer) (GPT-2's residual rule)
        nn.init.normal_(self.embedding.weight, std=0.02)
        with torch.no_grad():
            for layer in self.layers:
                layer.mixer.out_proj.weight /= math.sqrt(cfg.n_layer)
        if self.classifier is not None:
            nn.init.zeros_(self.classifier.bias)

    # ---- tokens in, hidden states out ------------------------------------------------------------------
    def _tokens(self, tokens, per_step=False):
        """Check the shape and range; return tokens with a channel axis: (B, L, C), or (B, C) per step."""
        cfg = self.config
        want = (1 if per_step else 2) + (cfg.n_channels > 1)
        if tokens.dim() != want or (cfg.n_channels > 1 and tokens.shape[-1] != cfg.n_channels):
            dims = ["batch"] + ([] if per_step else ["length"])
            dims += [str(cfg.n_channels)] if cfg.n_channels > 1 else []
            raise ValueError(f"tokens must be ({', '.join(dims)}), got {tuple(tokens.shape)}")
        if tokens.numel() and bool(((tokens < 0) | (tokens >= cfg.vocab_size)).any()):
            raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}), "
                             f"got {int(tokens.min())}..{int(tokens.max())}")
        return tokens if cfg.n_channels > 1 else tokens.unsqueeze(-1)

    def _embed(self, tokens):
        """tokens (..., C) -> residual stream (..., D): the channels' embeddings summed."""
        cfg = self.config
        offsets = torch.arange(cfg.n_channels, device=tokens.device) * cfg.vocab_size  # (C,)
        x = self.embedding(tokens + offsets).sum(-2)  # (..., D)
        return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)

    def _head(self, h):
        """h (..., D) -> logits (..., V) or (..., C, V)."""
        logits = F.linear(h, self.embedding.weight)  # (..., C*V)
        return logits.unflatten(-1, (self.config.n_channels, -1)) if self.config.n_channels > 1 else logits

    def embed(self, tokens, mask=None, resets=None, cache=None):
        """Final hidden states (B, L, D).

        mask (B, L) bool, True at valid positions: every run of valid positions is processed as its own
        sequence, isolated from padding in both directions. resets (B, L) bool: True at the first token of
        each packed sequence. cache: an `InferenceCache` whose state starts the pass and is updated in place.
        """
        tokens = self._tokens(tokens)  # (B, L, C)
        if mask is not None:
            if cache is not None:
                raise ValueError("mask and cache cannot be combined: stream whole sequences through a cache")
            mask = mask.bool()
            edges = F.pad(mask[:, 1:] != mask[:, :-1], (1, 0))  # (B, L) True where valid <-> padding
            resets = edges if resets is None else resets.bool() | edges
        elif resets is not None:
            resets = resets.bool()
        if cache is not None:
            self._require_causal()
        x = self._embed(tokens)  # (B, L, D)
        for i, layer in enumerate(self.layers):
            if cache is None:
                x = layer(x, resets)
            else:
                x, (conv, ssm) = layer(x, resets, (cache.conv[i], cache.ssm[i]))
                cache.conv[i] = conv.detach().clone(memory_format=torch.contiguous_format)
                cache.ssm[i] = ssm.detach().clone(memory_format=torch.contiguous_format)
        return self.norm_f(x)

    # ---- heads ------------------------------------------------------------------------------------------
    def forward(self, tokens, mask=None, resets=None, cache=None):
        """Next-token logits (B, L, V), or (B, L, C, V) for multichannel tokens (B, L, C).

        A bidirectional model's logits see the whole sequence: train them on masked tokens, not the next one.
        """
        return self._head(self.embed(tokens, mask=mask, resets=resets, cache=cache))

    def classify(self, tokens, mask=None, lengths=None):
        """Class logits (B, n_classes) from hidden states mean-pooled over valid positions.

        Valid positions: `mask` (B, L) bool, else the first `lengths` (B,) positions, else tokens != pad_id
        (for multichannel tokens, positions where any channel is not pad_id).
        """
        if self.classifier is None:
            raise ValueError("this model has no classification head (config.n_classes is 0)")
        if mask is None and lengths is not None:
            mask = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]  # (B, L)
        elif mask is None:
            mask = tokens != self.config.pad_id
            mask = mask.any(-1) if self.config.n_channels > 1 else mask  # (B, L)
        h = self.embed(tokens, mask=mask)  # (B, L, D)
        w = mask.to(h.dtype).unsqueeze(-1)  # (B, L, 1)
        pooled = (h * w).sum(1) / w.sum(1).clamp(min=1)  # (B, D)
        return self.classifier(pooled)  # (B, n_classes)

    # ---- recurrent inference ----------------------------------------------------------------------------
    def _require_causal(self):
        if self.config.bidirectional:
            raise ValueError("a bidirectional model reads the whole sequence at once: it has no cache or step")

    def allocate_cache(self, batch: int, device=None) -> InferenceCache:
        """An empty (all-zero) cache; a pass that starts from it equals a pass without one."""
        self._require_causal()
        cfg = self.config
        weight = self.embedding.weight
        device = weight.device if device is None else device
        ssm_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        return InferenceCache(
            conv=[torch.zeros(batch, cfg.d_inner, cfg.d_conv - 1, dtype=weight.dtype, device=device)
                  for _ in range(cfg.n_layer)],
            ssm=[torch.zeros(batch, cfg.d_inner, cfg.d_state, dtype=ssm_dtype, device=device)
                 for _ in range(cfg.n_layer)])

    @torch.no_grad()
    def step(self, tokens, cache: InferenceCache, resets=None):
        """One token per row: tokens (B,) or (B, C) -> logits (B, V) or (B, C, V); the cache advances.

        resets (B,) bool: those rows start a new sequence (their state is zeroed first).
        """
        self._require_causal()
        tokens = self._tokens(tokens, per_step=True)  # (B, C)
        if resets is not None:
            cache.reset(resets.bool())
        x = self._embed(tokens)  # (B, D)
        for i, layer in enumerate(self.layers):
            x = x + layer.mixer.step(layer.norm(x), cache.conv[i], cache.ssm[i])
        return self._head(self.norm_f(x))

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay matrices, not vectors (biases, norms, D, dt bias) nor A_log (as mamba_ssm)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            (no_decay if p.dim() < 2 or name.endswith("A_log") else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
