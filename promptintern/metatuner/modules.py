"""MetaTuner's networks: the generator G (meta encoder φ_s + prompt decoder φ_p, and the frozen copy φ_p'),
the parameter decoder F (two bottleneck hypernetworks) and the actor M with per-sample LoRA.

G is a causal LM of the llama family (``model.embed_tokens``, ``model.rotary_emb``, ``model.layers``,
``model.norm``, ``lm_head``) whose base weights stay frozen; it is trained through LoRA factors (slots of
:class:`SlotLoRALinear`). With k shared layers:

- φ_s  = embeddings + decoder layers [0, k)  -> trainable part: the "live" slot of layers [0, k)
- φ_p  = decoder layers [k, K) + final norm + LM head -> trainable part: the "live" slot of layers [k, K)
- φ_p' = the "frozen" slot of layers [k, K) (requires_grad False), copied from φ_p by :meth:`Generator.sync`
- no-sharing ablation ("separate"): an extra "encoder" slot on layers [0, k), trained by the task loss only;
  G's own "live" slot there is then trained by the regularization loss only.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .per_sample_lora import (
    PerSampleLoRALinear,
    SlotLoRALinear,
    layer_index,
    per_sample_factors,
    wrap_linears,
)


def decoder_layers(lm) -> nn.ModuleList:
    inner = getattr(lm, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "embed_tokens") or not hasattr(inner, "rotary_emb"):
        raise TypeError(f"{type(lm).__name__}: MetaTuner needs a llama-family causal LM (model.embed_tokens/rotary_emb/layers)")
    return layers


def encode_lower(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> torch.Tensor:
    """Hidden states after G's first k decoder layers (k = 0: the token embeddings), shape (b, s, d).

    The same computation as the first k iterations of ``LlamaModel.forward`` (no cache), so the output equals
    ``output_hidden_states[k]`` of a full forward pass.
    """
    from transformers.masking_utils import create_causal_mask

    inner = lm.model
    emb = inner.embed_tokens(input_ids)
    if k == 0:
        return emb
    pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    mask = create_causal_mask(
        config=inner.config, inputs_embeds=emb, attention_mask=attention_mask, past_key_values=None, position_ids=pos
    )
    pe = inner.rotary_emb(emb, position_ids=pos)
    h = emb
    for layer in inner.layers[:k]:
        h = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=pos)
    return h


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str = "mean",
                pool_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """h_i: masked mean (over ``pool_mask``'s positions with "query_mean", e.g. the query's tokens; else over every
    real token) or the last real token (right padding) of the states, then RMS-normalised (no weights)."""
    if how == "query_mean":
        if pool_mask is None:
            raise ValueError("pool 'query_mean' needs the query's positions (pool_mask)")
        attention_mask, how = attention_mask * pool_mask, "mean"
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if how == "mean":
        h = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    else:
        last = attention_mask.long().sum(1).clamp_min(1) - 1
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    h = h.float()
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


class Generator(nn.Module):
    """G with LoRA slots; see the module docstring for which slot is φ_s, φ_p, φ_p'."""

    def __init__(self, lm, k: int, r: int, alpha: float, targets, separate_encoder: bool = False):
        super().__init__()
        self.lm = lm
        for p in lm.parameters():
            p.requires_grad_(False)
        layers = decoder_layers(lm)
        self.n_layers, self.k = len(layers), int(k)
        self.separate_encoder = bool(separate_encoder) and self.k > 0

        def make(name, linear):
            lower = layer_index(name) < self.k
            slots = ["live"] + (["encoder"] if lower and self.separate_encoder else []) + ([] if lower else ["frozen"])
            return SlotLoRALinear(linear, r, alpha, slots)

        self.loras: dict[str, SlotLoRALinear] = wrap_linears(lm, targets, make)
        for m in self.upper:
            m.lora_A["frozen"].requires_grad_(False)
            m.lora_B["frozen"].requires_grad_(False)
        self.sync()

    # ---------------------------------------------------------------------------------------------- groups
    @property
    def lower(self) -> list[SlotLoRALinear]:
        return [m for n, m in self.loras.items() if layer_index(n) < self.k]

    @property
    def upper(self) -> list[SlotLoRALinear]:
        return [m for n, m in self.loras.items() if layer_index(n) >= self.k]

    @staticmethod
    def _slot_params(mods, slot) -> list[nn.Parameter]:
        return [p for m in mods for p in (m.lora_A[slot], m.lora_B[slot])]

    def phi_s_params(self) -> list[nn.Parameter]:
        """Trainable part of the meta encoder φ_s (shared by G and F unless no_share)."""
        return self._slot_params(self.lower, "live")

    def phi_p_params(self) -> list[nn.Parameter]:
        return self._slot_params(self.upper, "live")

    def phi_p_frozen_params(self) -> list[nn.Parameter]:
        return self._slot_params(self.upper, "frozen")

    def encoder_params(self) -> list[nn.Parameter]:
        """What the hypernetwork's encoder trains: φ_s, or the separate "encoder" slot (no_share)."""
        return self._slot_params(self.lower, "encoder") if self.separate_encoder else self.phi_s_params()

    def trainable_params(self) -> list[nn.Parameter]:
        out = self.phi_s_params() + self.phi_p_params()
        return out + (self._slot_params(self.lower, "encoder") if self.separate_encoder else [])

    # ---------------------------------------------------------------------------------------------- slots
    @torch.no_grad()
    def sync(self) -> None:
        """φ_p' <- φ_p."""
        for m in self.upper:
            m.copy_slot("live", "frozen")

    @torch.no_grad()
    def init_encoder_from_phi_s(self) -> None:
        if self.separate_encoder:
            for m in self.lower:
                m.copy_slot("live", "encoder")

    @contextlib.contextmanager
    def mode(self, lower: str = "live", upper: str = "live"):
        """Which slot the lower (φ_s) and upper (φ_p / φ_p') layers use inside the block."""
        before = {n: m.active for n, m in self.loras.items()}
        try:
            for m in self.lower:
                m.active = lower
            for m in self.upper:
                m.active = upper
            yield self
        finally:
            for n, m in self.loras.items():
                m.active = before[n]

    def encode(self, input_ids, attention_mask, pool: str = "mean", pool_mask=None) -> torch.Tensor:
        """h_i from the meta encoder (or the separate encoder of the no-sharing ablation)."""
        with self.mode(lower="encoder" if self.separate_encoder else "live"):
            hidden = encode_lower(self.lm, input_ids, attention_mask, self.k)
        return pool_hidden(hidden, attention_mask, pool, pool_mask)

    def lora_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.named_parameters() if ".lora_" in n}

    def load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        missing = [n for n in own if ".lora_" in n and n not in state]
        if missing:
            raise KeyError(f"generator LoRA state lacks {missing[:3]}...")
        with torch.no_grad():
            for n, t in state.items():
                own[n].copy_(t.to(own[n].device))


class HyperLoRA(nn.Module):
    """Parameter decoder F: θ_a = W_u^a ReLU(W_d^a h), θ_b = W_u^b ReLU(W_d^b h); per target layer
    A_i = θ_a-slice reshaped (r × in) / sqrt(in), B_i = θ_b-slice reshaped (out × r); ΔW_i = λ B_i A_i
    (λ is applied by the actor's wrappers). W_u^b starts at zero, so ΔW_i = 0 at the start, like LoRA's B = 0."""

    def __init__(self, d_h: int, shapes: dict[str, tuple[int, int]], r: int, hidden: int):
        super().__init__()
        self.shapes = dict(shapes)  # layer name -> (in, out)
        self.r = int(r)
        self.size_a = [self.r * i for i, _ in self.shapes.values()]
        self.size_b = [o * self.r for _, o in self.shapes.values()]
        self.down_a = nn.Linear(d_h, hidden)
        self.up_a = nn.Linear(hidden, sum(self.size_a))
        self.down_b = nn.Linear(d_h, hidden)
        self.up_b = nn.Linear(hidden, sum(self.size_b))
        nn.init.zeros_(self.up_b.weight)
        nn.init.zeros_(self.up_b.bias)

    def forward(self, h: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        h = h.to(self.down_a.weight.dtype)
        theta_a = self.up_a(torch.relu(self.down_a(h)))
        theta_b = self.up_b(torch.relu(self.down_b(h)))
        n = h.shape[0]
        out = {}
        for (name, (fan_in, fan_out)), a, b in zip(
            self.shapes.items(), theta_a.split(self.size_a, -1), theta_b.split(self.size_b, -1), strict=True
        ):
            out[name] = (a.reshape(n, self.r, fan_in) / math.sqrt(fan_in), b.reshape(n, fan_out, self.r))
        return out


def select_factors(factors: dict | None, index) -> dict | None:
    """Rows `index` (list or tensor) of every factor pair."""
    if factors is None:
        return None
    idx = torch.as_tensor(index, dtype=torch.long, device=next(iter(factors.values()))[0].device)
    return {n: (A.index_select(0, idx), B.index_select(0, idx)) for n, (A, B) in factors.items()}


class Actor(nn.Module):
    """M: a frozen causal LM whose target linear layers take per-sample LoRA factors."""

    def __init__(self, lm, targets, scale: float):
        super().__init__()
        self.lm = lm
        for p in lm.parameters():
            p.requires_grad_(False)
        self.layers: dict[str, PerSampleLoRALinear] = wrap_linears(
            lm, targets, lambda _n, linear: PerSampleLoRALinear(linear, scale)
        )

    def shapes(self) -> dict[str, tuple[int, int]]:
        return {n: (m.in_features, m.out_features) for n, m in self.layers.items()}

    def factors(self, factors: dict | None):
        return per_sample_factors(self.layers, factors)
