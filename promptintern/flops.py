"""Model FLOPs of LoRA fine-tuning, and model FLOPs utilization (MFU) against an accelerator's published peak.

Model FLOPs count the arithmetic the model needs, not what the hardware happened to do: padding positions,
recomputation and optimizer work are excluded, so MFU = model FLOPs / seconds / peak shows waste honestly.
A multiply-add counts as 2 FLOPs.

The formula (llama-family decoder: gated MLP, grouped-query attention, no biases), from ``model.config``:

    d  = hidden_size              L = num_hidden_layers        V = vocab_size
    H  = num_attention_heads      K = num_key_value_heads      h = head_dim (default d / H)
    I  = intermediate_size        A = H * h (attention width)

    N  = L * (d*A + 2*d*K*h + A*d + 3*d*I)      non-embedding matmul weights: q, k, v, o, gate, up, down
                                                 (norms, biases, embeddings and the LM head excluded)

Per token that runs forward and backward (``trainable token``):

    linear forward        2 * N
    attention forward     2 * L * s * A         QK^T and PV: 2*A FLOPs each per (query, key) pair, i.e.
                                                 4*A*s per query per layer over s keys, halved because a
                                                 causal query sees on average s/2 keys (s^2/2 pairs per
                                                 sequence of s tokens; the exact s(s+1)/2 is not used)
    linear backward       2 * N                 activation gradients only: the base weights are frozen,
                                                 so no weight-gradient matmuls (convention: the saving in
                                                 the first layer, whose input needs no gradient, ignored)
    attention backward    2 * (2 * L * s * A)   both operands of QK^T and of PV are activations, so each
                                                 product has two gradient matmuls of the forward's size
    LoRA                  6 * P                 P trainable (LoRA) parameters: 2P forward, 2P activation
                                                 gradient, 2P weight gradient

    per trainable token:  4*N + 6*L*s*A + 6*P

Per target token (a token with a label), the LM head, which
:func:`promptintern.trainer.completion_loss` computes only there:

    4 * d * V                                   2dV forward + 2dV activation gradient (head frozen)

Per forward-only token (e.g. the frozen teacher's pass in prompt baking, adapter disabled):

    2*N + 2*L*s*A                               (its LM head is not counted: a slight undercount)

``s`` is the length of the sequence a token attends within: its own record, also when records are packed
several to a row (the block-diagonal mask keeps attention within the record). Over records of lengths
l_1..l_n the exact sum of s/2 over tokens is sum(l_i^2)/2, so the ``mean_seq_len`` to pass is the
token-weighted mean length sum(l_i^2) / sum(l_i) (:func:`attended_length`); for equal lengths it is the length.

Total for a stage:

    F = (T - T_f) * (4*N + 6*L*s*A + 6*P) + T_y * 4*d*V + T_f * (2*N + 2*L*s*A)

with T processed real tokens (padding excluded), T_y target tokens and T_f forward-only tokens (counted in T).
Models whose loss takes the plain path (logit soft-capping) compute the head on every position, which this
undercounts.

Peaks: :func:`accelerator_peaks` reads ``promptintern/accelerators.yaml`` (published vendor figures, dense
bf16); MFU is ``None`` on a CPU, on a MIG slice and on a GPU the file does not name.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

ACCELERATORS_FILE = Path(__file__).resolve().parent / "accelerators.yaml"
_DEVICE_RE = re.compile(r"^(cpu|cuda|mps|xpu|meta)(:\d+)?$")


@dataclass(frozen=True)
class DecoderDims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> DecoderDims:
        """Read the dimensions of a llama-family decoder config (a multimodal config's text part)."""
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()
        d, heads = int(config.hidden_size), int(config.num_attention_heads)
        kv = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or d // heads
        return cls(hidden=d, layers=int(config.num_hidden_layers), heads=heads, kv_heads=int(kv),
                   head_dim=int(head_dim), intermediate=int(config.intermediate_size), vocab=int(config.vocab_size))

    @property
    def attn_width(self) -> int:
        """A = heads x head_dim."""
        return self.heads * self.head_dim

    @property
    def matmul_params(self) -> int:
        """N: the non-embedding matmul weights of all layers (q, k, v, o projections and the gated MLP)."""
        d, a, kvw = self.hidden, self.attn_width, self.kv_heads * self.head_dim
        return self.layers * (d * a + 2 * d * kvw + a * d + 3 * d * self.intermediate)


def attended_length(lengths) -> float:
    """Token-weighted mean sequence length sum(l^2) / sum(l): the ``s`` that makes the attention term exact."""
    lengths = [int(n) for n in lengths]
    total = sum(lengths)
    return sum(n * n for n in lengths) / total if total else 0.0


def training_flops(config, lora_params: int, tokens: int, target_tokens: int, mean_seq_len: float,
                   forward_only_tokens: int = 0) -> float:
    """Model FLOPs of one LoRA training stage (see the module docstring for the formula and conventions).

    ``tokens``: real tokens processed (padding excluded), including ``forward_only_tokens``;
    ``target_tokens``: tokens with a label (LM head computed); ``mean_seq_len``: :func:`attended_length`
    of the sequences; ``lora_params``: trainable parameters."""
    dims = config if isinstance(config, DecoderDims) else DecoderDims.from_config(config)
    n, a, s = dims.matmul_params, dims.attn_width, float(mean_seq_len)
    attn_fwd = 2 * dims.layers * s * a
    trainable = tokens - forward_only_tokens
    per_trainable = 4 * n + 3 * attn_fwd + 6 * lora_params
    per_forward_only = 2 * n + attn_fwd
    per_target = 4 * dims.hidden * dims.vocab
    return float(trainable * per_trainable + forward_only_tokens * per_forward_only + target_tokens * per_target)


def attention_break_even(config) -> float:
    """Row width W at which attention computed over a whole row (4*A*W FLOPs per position per layer, as an
    explicit mask makes eager and sdpa do) equals the linear layers' 2*N/L per position per layer. Used to
    weigh wide packed rows (:func:`promptintern.trainer.pack_rows`); hardware work, not model FLOPs."""
    dims = config if isinstance(config, DecoderDims) else DecoderDims.from_config(config)
    return (2 * dims.matmul_params / dims.layers) / (4 * dims.attn_width)


@functools.lru_cache(maxsize=4)
def load_accelerators(path: str | None = None) -> tuple[dict, ...]:
    """The entries of the accelerator peak file (published vendor figures), in match order."""
    import yaml

    raw = yaml.safe_load(Path(path or ACCELERATORS_FILE).read_text()) or {}
    entries = raw.get("accelerators") or []
    for e in entries:
        missing = {"name", "match", "bf16_tflops", "memory_tb_s", "source", "retrieved"} - set(e)
        if missing:
            raise ValueError(f"{path or ACCELERATORS_FILE}: entry {e.get('name')!r} lacks {sorted(missing)}")
    return tuple(entries)


def accelerator_by_name(name: str) -> dict | None:
    """The first entry whose ``match`` regex is found in a device name (case-insensitive); None if none is,
    or if the name is a MIG slice (its peak is a fraction of the whole GPU's)."""
    if not name or "MIG" in name:
        return None
    for e in load_accelerators():
        if re.search(e["match"], name, flags=re.IGNORECASE):
            return {**e, "device_name": name}
    return None


def accelerator_peaks(device=None) -> dict | None:
    """Peak figures for a torch device (``torch.device``, ``"cuda:0"``, ``"cpu"``), or for a device name such
    as ``"NVIDIA H100 80GB HBM3"``: the matching accelerators.yaml entry (``bf16_tflops``, ``memory_tb_s``,
    ``source``, ...) plus ``device_name``. None on CPU, on an unknown GPU, or without CUDA."""
    if isinstance(device, str) and not _DEVICE_RE.match(device):
        return accelerator_by_name(device)
    import torch

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return accelerator_by_name(torch.cuda.get_device_name(device))


def mfu(model_flops: float | None, seconds: float, peaks: dict | None) -> float | None:
    """Model FLOPs utilization: achieved model FLOPs/s over the peak dense bf16 FLOPs/s (a fraction, not %)."""
    if not peaks or not model_flops or seconds <= 0 or not peaks.get("bf16_tflops"):
        return None
    return model_flops / seconds / (float(peaks["bf16_tflops"]) * 1e12)
