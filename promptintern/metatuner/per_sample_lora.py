"""LoRA wrappers for linear layers that peft cannot express.

- :class:`PerSampleLoRALinear` (the actor M): every sample of a batch carries its own factors,
  ``y_i = W x_i + b + λ · B_i A_i x_i`` with A_i (r × in) and B_i (out × r), computed with two ``bmm``.
  The factors are set for one forward/generate call and cleared afterwards (:func:`per_sample_factors`).
- :class:`SlotLoRALinear` (the generator G): an ordinary LoRA with several named weight *slots*, one active at
  a time. G's upper layers hold a trainable slot (φ_p) and a frozen copy (φ_p'); in the no-sharing ablation its
  lower layers hold a second trainable slot read only by the hypernetwork's encoder.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn


class PerSampleLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, scale: float = 1.0):
        super().__init__()
        self.base = base
        self.scale = float(scale)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.A: torch.Tensor | None = None  # (batch, r, in) or (r, in)
        self.B: torch.Tensor | None = None  # (batch, out, r) or (out, r)

    def set_factors(self, A: torch.Tensor | None, B: torch.Tensor | None) -> None:
        if A is None or B is None:
            self.A = self.B = None
            return
        if A.shape[-1] != self.in_features or B.shape[-2] != self.out_features or A.shape[-2] != B.shape[-1]:
            raise ValueError(
                f"LoRA factors A{tuple(A.shape)} B{tuple(B.shape)} do not fit a {self.in_features}->{self.out_features} layer"
            )
        self.A, self.B = A, B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.A is None:
            return y
        A, B = self.A, self.B
        if A.dim() == 2:
            A, B = A.unsqueeze(0), B.unsqueeze(0)
        n = x.shape[0]
        if A.shape[0] == 1 and n != 1:
            A, B = A.expand(n, -1, -1), B.expand(n, -1, -1)
        if A.shape[0] != n:
            raise ValueError(f"per-sample LoRA: {A.shape[0]} factor sets for a batch of {n}")
        flat = x.reshape(n, -1, self.in_features)  # (n, tokens, in)
        low = torch.bmm(flat, A.to(flat.dtype).transpose(1, 2))  # (n, tokens, r)
        delta = torch.bmm(low, B.to(flat.dtype).transpose(1, 2))  # (n, tokens, out)
        return y + self.scale * delta.reshape(*x.shape[:-1], self.out_features).to(y.dtype)


class SlotLoRALinear(nn.Module):
    """``y = W x + b + (alpha / r) · B_s A_s x`` for the active slot s (peft's initialisation: A Kaiming, B zero)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, slots: Iterable[str] = ("live",)):
        super().__init__()
        self.base = base
        self.r, self.scaling = int(r), float(alpha) / float(r)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        slots = list(slots)
        for s in slots:
            self.add_slot(s)
        self.active = slots[0]

    def add_slot(self, name: str, *, copy_from: str | None = None, trainable: bool = True) -> None:
        dev = self.base.weight.device
        A = torch.empty(self.r, self.base.in_features, device=dev)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        B = torch.zeros(self.base.out_features, self.r, device=dev)
        if copy_from is not None:
            A.copy_(self.lora_A[copy_from].detach())
            B.copy_(self.lora_B[copy_from].detach())
        self.lora_A[name] = nn.Parameter(A, requires_grad=trainable)
        self.lora_B[name] = nn.Parameter(B, requires_grad=trainable)

    @torch.no_grad()
    def copy_slot(self, src: str, dst: str) -> None:
        self.lora_A[dst].copy_(self.lora_A[src])
        self.lora_B[dst].copy_(self.lora_B[src])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        A, B = self.lora_A[self.active], self.lora_B[self.active]
        return y + self.scaling * ((x @ A.to(x.dtype).t()) @ B.to(x.dtype).t())


def wrap_linears(model: nn.Module, targets: Iterable[str], make: Callable[[str, nn.Linear], nn.Module],
                 under: str = "model.layers") -> dict[str, nn.Module]:
    """Replace every ``nn.Linear`` under ``under`` whose attribute name is in ``targets``; returns name -> wrapper
    in module order (names are full module paths, e.g. ``model.layers.0.self_attn.q_proj``)."""
    targets = set(targets)
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and name.startswith(under + ".") and name.rsplit(".", 1)[-1] in targets
    ]
    if not found:
        raise ValueError(f"no linear layer named {sorted(targets)} under {under!r}")
    out = {}
    for name, mod in found:
        parent_name, attr = name.rsplit(".", 1)
        wrapper = make(name, mod)
        setattr(model.get_submodule(parent_name), attr, wrapper)
        out[name] = wrapper
    return out


def layer_index(name: str) -> int:
    """``model.layers.7.self_attn.q_proj`` -> 7."""
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1])


@contextlib.contextmanager
def per_sample_factors(layers: dict[str, PerSampleLoRALinear], factors: dict[str, tuple] | None):
    """Set per-sample factors {layer name: (A, B)} on the wrapped layers for the duration of the block."""
    try:
        if factors is not None:
            for name, layer in layers.items():
                layer.set_factors(*factors[name])
        yield
    finally:
        for layer in layers.values():
            layer.set_factors(None, None)
