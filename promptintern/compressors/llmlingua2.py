"""LLMLingua-2 compressor, through the optional ``llmlingua`` package, used only when it and the weights are local.

Requirements (checked when the compressor is built, with an error naming what is missing):
- the package: ``pip install llmlingua`` (tested against the API of 0.2.2; it is not a dependency of this
  project);
- the classifier weights, ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank`` by default, in the Hugging
  Face cache (``huggingface-cli download <id>`` on a machine with internet) or a local folder passed as
  ``model_name``.

Two modes:
- ``units`` (default): the LLMLingua-2 token classifier (loaded by ``llmlingua.PromptCompressor``) gives every
  token its probability of being preserved; a word-level unit's priority is the *mean* over its tokens
  (LLMLingua-2's ``token_to_word="mean"``). Selection, protected spans and whitespace handling are the shared
  ones of :mod:`.units`, so the achieved rate lands on the requested one like the other backends.
- ``native``: ``PromptCompressor.compress_prompt`` itself on each unprotected stretch of text (its own
  percentile threshold; the achieved rate is only approximately the requested one), protected spans copied
  through, and the rate of the stretches raised so that the protected tokens count toward the budget.

Achieved rates are counted with the classifier's tokenizer unless ``counter`` is given.
The package's constructor asks tiktoken for ``gpt-3.5-turbo``; that encoding is supplied offline from
:func:`promptintern.tokens.tiktoken_encoding` while it runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path

from ..tokens import tiktoken_encoding
from .base import CompressionResult, CompressorUnavailableError, LazyCounter, UnitCompressor, check_rate
from .units import ProtectSpec, compile_protect, protected_spans, segment

DEFAULT_MODEL = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"


def _package_available() -> bool:
    return importlib.util.find_spec("llmlingua") is not None


def _weights_available(model_name: str) -> bool:
    path = Path(model_name).expanduser()
    if path.exists():
        return (path / "config.json").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_name, "config.json"), str) and isinstance(
            try_to_load_from_cache(model_name, "tokenizer_config.json"), str
        )
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return False


def missing_requirements(model_name: str = DEFAULT_MODEL) -> list[str]:
    """What is missing to run LLMLingua-2 here ([] when everything is in place)."""
    missing = []
    if not _package_available():
        missing.append("the Python package `llmlingua` is not installed (pip install llmlingua==0.2.2)")
    if not _weights_available(model_name):
        missing.append(
            f"the model weights {model_name!r} are not in the local Hugging Face cache: on a machine with "
            f"internet run `huggingface-cli download {model_name}` (then copy the cache, or set HF_HOME), "
            "or pass a local model folder as model_name"
        )
    return missing


def check_available(model_name: str = DEFAULT_MODEL) -> None:
    missing = missing_requirements(model_name)
    if missing:
        raise CompressorUnavailableError(
            "compressor 'llmlingua2' is unavailable: " + "; ".join(missing) + ". "
            "Offline alternatives: the 'perplexity' compressor (local causal LM), or 'random'/'truncate'."
        )


@contextlib.contextmanager
def _offline_tiktoken():
    """Let ``tiktoken.encoding_for_model`` answer from the bundled ranks while llmlingua's constructor runs."""
    import tiktoken

    original = tiktoken.encoding_for_model

    def encoding_for_model(name: str):
        try:
            return original(name)
        except Exception:  # noqa: BLE001 - no network: fall back to the bundled encodings
            return tiktoken_encoding(
                "o200k_base" if name.startswith(("gpt-4o", "o1", "o3")) else "cl100k_base"
            )

    tiktoken.encoding_for_model = encoding_for_model
    try:
        yield
    finally:
        tiktoken.encoding_for_model = original


def load_prompt_compressor(model_name: str = DEFAULT_MODEL, device: str | None = None):
    """``llmlingua.PromptCompressor(model_name, use_llmlingua2=True)``, after checking requirements."""
    check_available(model_name)
    import torch
    from llmlingua import PromptCompressor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with _offline_tiktoken():
        return PromptCompressor(model_name=model_name, use_llmlingua2=True, device_map=device)


class LLMLingua2Scorer:
    """Mean preserve-probability of each unit's tokens under the LLMLingua-2 token classifier.

    ``model``/``tokenizer`` may be given directly (a ``*ForTokenClassification`` model whose label 1 means
    "preserve", and its fast tokenizer); otherwise they come from ``llmlingua.PromptCompressor``.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        device: str | None = None,
        model=None,
        tokenizer=None,
        max_seq_len: int = 512,
    ):
        self.model_name, self.device = model_name, device
        self.model, self.tokenizer, self.max_seq_len = model, tokenizer, max_seq_len
        self.prompt_compressor = None
        if model is None:
            check_available(model_name)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer together with a model object")

    def load(self) -> None:
        if self.model is None:
            self.prompt_compressor = load_prompt_compressor(self.model_name, self.device)
            self.model, self.tokenizer = self.prompt_compressor.model, self.prompt_compressor.tokenizer

    def token_probs(self, text: str) -> tuple[list[tuple[int, int]], list[float]]:
        import torch

        self.load()
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        head, tail = _specials(self.tokenizer)
        chunk = max(1, self.max_seq_len - len(head) - len(tail))
        device = next(self.model.parameters()).device
        probs: list[float] = []
        with torch.inference_mode():
            for p in range(0, len(ids), chunk):
                piece = ids[p : p + chunk]
                full = head + piece + tail
                logits = self.model(input_ids=torch.tensor([full], device=device)).logits[0].float()
                keep = torch.softmax(logits, dim=-1)[:, 1]
                probs.extend(float(x) for x in keep[len(head) : len(head) + len(piece)])
        return offsets, probs

    def priorities(self, text: str, spans: Sequence[tuple[int, int]]) -> list[float]:
        offsets, probs = self.token_probs(text)
        owner = [-1] * len(text)
        for u, (s, e) in enumerate(spans):
            owner[s:e] = [u] * (e - s)
        sums, counts = [0.0] * len(spans), [0] * len(spans)
        for (s, e), pr in zip(offsets, probs, strict=True):
            for u in {owner[c] for c in range(s, min(e, len(text))) if owner[c] >= 0}:
                sums[u] += pr
                counts[u] += 1
        return [s / c if c else 0.5 for s, c in zip(sums, counts, strict=True)]


def _specials(tokenizer) -> tuple[list[int], list[int]]:
    """Special tokens around a sequence for an encoder classifier: [CLS]/<s> before, [SEP]/</s> after."""
    start = getattr(tokenizer, "cls_token_id", None)
    start = start if start is not None else getattr(tokenizer, "bos_token_id", None)
    end = getattr(tokenizer, "sep_token_id", None)
    end = end if end is not None else getattr(tokenizer, "eos_token_id", None)
    return ([start] if start is not None else []), ([end] if end is not None else [])


class LLMLingua2NativeCompressor:
    """``PromptCompressor.compress_prompt`` on the unprotected stretches; protected spans copied through."""

    name = "llmlingua2"

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        device: str | None = None,
        protect: ProtectSpec = None,
        counter=None,
        prompt_compressor=None,
        force_tokens: Sequence[str] = ("\n",),
    ):
        if prompt_compressor is None:
            check_available(model_name)
        self.model_name, self.device = model_name, device
        self.prompt_compressor = prompt_compressor
        self.default_protect = compile_protect(protect)
        self.force_tokens = list(force_tokens)
        self._counter_source = counter
        self.counter: LazyCounter | None = None

    def load(self):
        if self.prompt_compressor is None:
            self.prompt_compressor = load_prompt_compressor(self.model_name, self.device)
        if self.counter is None:
            src = (
                self._counter_source if self._counter_source is not None else self.prompt_compressor.tokenizer
            )
            self.counter = LazyCounter(src)
        return self

    def compress(self, text: str, rate: float, protect: ProtectSpec = None) -> CompressionResult:
        rate = check_rate(rate)
        self.load()
        t0 = time.perf_counter()
        count = self.counter.count
        original = count(text)
        spans = _merge(protected_spans(text, self.default_protect + compile_protect(protect)))
        pieces: list[tuple[bool, str]] = []  # (protected, text)
        pos = 0
        for s, e in spans:
            if s > pos:
                pieces.append((False, text[pos:s]))
            pieces.append((True, text[s:e]))
            pos = e
        if pos < len(text):
            pieces.append((False, text[pos:]))
        if rate >= 1.0 or original == 0:
            out = text
        else:
            prot_tokens = sum(count(t) for p, t in pieces if p)
            free = original - prot_tokens
            inner = 0.0 if free <= 0 else min(1.0, max(0.0, (rate * original - prot_tokens) / free))
            out_parts = []
            for is_prot, piece in pieces:
                if is_prot or inner >= 1.0 or not piece.strip():
                    out_parts.append(piece)
                elif inner > 0.0:
                    res = self.prompt_compressor.compress_prompt(
                        piece, rate=inner, force_tokens=self.force_tokens, drop_consecutive=True
                    )
                    lead = piece[: len(piece) - len(piece.lstrip())]
                    trail = piece[len(piece.rstrip()) :]
                    out_parts.append(lead + res["compressed_prompt"].strip() + trail)
                else:  # the whole stretch is dropped: keep one separator
                    out_parts.append("\n" if "\n" in piece else " ")
            out = "".join(out_parts).strip() if inner < 1.0 else "".join(out_parts)
        kept = count(out)
        return CompressionResult(
            text=out,
            achieved_rate=1.0 if original == 0 else kept / original,
            requested_rate=rate,
            seconds=time.perf_counter() - t0,
            original_tokens=original,
            compressed_tokens=kept,
            compressor=self.name,
            n_units=segment(text).n,
            n_protected_units=len(spans),
            extra={"mode": "native"},
        )


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def llmlingua2_compressor(
    model_name: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    mode: str = "units",
    protect: ProtectSpec = None,
    counter=None,
    model=None,
    tokenizer=None,
):
    """Build the LLMLingua-2 compressor; raises :class:`CompressorUnavailableError` when it cannot run here."""
    if mode == "native":
        return LLMLingua2NativeCompressor(model_name, device, protect, counter)
    if mode != "units":
        raise ValueError(f"llmlingua2 mode must be 'units' or 'native', got {mode!r}")
    scorer = LLMLingua2Scorer(model_name, device, model=model, tokenizer=tokenizer)

    def classifier_tokenizer():
        scorer.load()
        return scorer.tokenizer

    return UnitCompressor(
        "llmlingua2", scorer, counter if counter is not None else classifier_tokenizer, protect
    )
