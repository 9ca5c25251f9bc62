"""Perplexity / self-information compressor (LLMLingua-1 and Selective-Context style), fully offline.

Scoring: a local causal LM (default ``smollm2-135m``; ``tiny`` in tests; any name ``models.load_model``
accepts, or a (model, tokenizer) pair) reads the text once and gives every token its self-information
``I(x_i) = -log p(x_i | x_<i)`` in nats. The first token is conditioned on the tokenizer's BOS token (EOS when
there is none). A word-level unit's score is the *sum* of the self-information of the tokens that start inside
it, i.e. ``-log p(unit | preceding text)``: units the model finds predictable (high probability, low
information) are dropped first, as in Selective-Context. Whitespace-only tokens are not scored (whitespace is
handled as structure, see :mod:`.units`).

Unlike LLMLingua, short prompts are compressed too (no 200-token minimum), and the selection hits the requested
rate on the measured token count rather than a threshold. Texts longer than the model's context are scored in
windows of ``window`` tokens, each new window re-reading the last ``overlap`` tokens of the previous one as
context. Scores are cached per text, so compressing one template at several rates scores it once. ``device``
defaults to ``models.load_model``'s choice (CUDA when available, else CPU).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from .base import UnitCompressor
from .units import ProtectSpec

DEFAULT_MODEL = "smollm2-135m"


class CausalLMScorer:
    """Self-information of tokens and word-level units under a causal LM."""

    def __init__(
        self,
        model=DEFAULT_MODEL,
        tokenizer=None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        window: int = 1024,
        overlap: int = 256,
        cache_size: int = 64,
    ):
        if not isinstance(model, str) and tokenizer is None:
            raise ValueError("pass the tokenizer together with a model object")
        if window < 3 or not 0 <= overlap < window - 1:
            raise ValueError(
                f"need window >= 3 and 0 <= overlap < window - 1 (window={window}, overlap={overlap})"
            )
        self._model_spec, self.model, self.tokenizer = model, None, tokenizer
        if not isinstance(model, str):
            self.model = model
        self.device, self.dtype = device, dtype
        self.window, self.overlap = window, overlap
        self._cache: OrderedDict[str, tuple[list[tuple[int, int]], list[float]]] = OrderedDict()
        self._cache_size = cache_size

    @property
    def model_name(self) -> str:
        if isinstance(self._model_spec, str):
            return self._model_spec
        return getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__

    def load(self) -> None:
        if self.model is None:
            from ..models import load_model

            self.model, tok = load_model(self._model_spec, device=self.device, dtype=self.dtype)
            self.tokenizer = self.tokenizer or tok
        if not getattr(self.tokenizer, "is_fast", True):
            raise ValueError("the perplexity compressor needs a fast tokenizer (character offsets)")

    def _start_token(self) -> int | None:
        tok = self.tokenizer
        for tid in (getattr(tok, "bos_token_id", None), getattr(tok, "eos_token_id", None)):
            if tid is not None:
                return int(tid)
        return None

    def token_scores(self, text: str) -> tuple[list[tuple[int, int]], list[float]]:
        """(char offsets, self-information in nats) for every token of ``text`` (no special tokens)."""
        if text in self._cache:
            self._cache.move_to_end(text)
            return self._cache[text]
        import torch

        self.load()
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        n = len(ids)
        scores = [math.nan] * n
        max_pos = getattr(getattr(self.model, "config", None), "max_position_embeddings", None) or self.window
        window = min(self.window, int(max_pos))
        overlap = max(1, min(self.overlap, window - 2))  # later windows need >= 1 token of context
        chunk = window - overlap - 1  # +1 for the start token on the first window
        start_tok = self._start_token()
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for p in range(0, n, chunk):
                ctx = max(0, p - overlap)
                inp = ids[ctx : p + chunk]
                shift = ctx  # position in `ids` of inp[0]
                if ctx == 0 and start_tok is not None:
                    inp = [start_tok] + inp
                    shift = -1
                logits = self.model(input_ids=torch.tensor([inp], device=device)).logits[0].float()
                logp = torch.log_softmax(logits, dim=-1)
                for j in range(max(p, 1 if shift == 0 else 0), min(p + chunk, n)):
                    k = j - shift  # index of token j inside inp
                    scores[j] = float(-logp[k - 1, ids[j]])
        finite = [s for s in scores if not math.isnan(s)]
        fill = max(finite) if finite else 0.0
        scores = [
            fill if math.isnan(s) else s for s in scores
        ]  # first token without a start token: keep-worthy
        result = (offsets, scores)
        self._cache[text] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def unit_scores(self, text: str, spans: Sequence[tuple[int, int]]) -> list[float]:
        """Sum of the self-information of the tokens in each unit (a token spanning k units gives 1/k to each)."""
        offsets, scores = self.token_scores(text)
        owner = [-1] * len(text)
        for u, (s, e) in enumerate(spans):
            owner[s:e] = [u] * (e - s)
        totals = [0.0] * len(spans)
        seen = [False] * len(spans)
        for (s, e), sc in zip(offsets, scores, strict=True):
            units = sorted({owner[c] for c in range(s, min(e, len(text))) if owner[c] >= 0})
            for u in units:
                totals[u] += sc / len(units)
                seen[u] = True
        if not all(seen):  # a unit no token starts in (tokenizer quirk): give it the mean score
            mean = sum(t for t, ok in zip(totals, seen, strict=True) if ok) / max(1, sum(seen))
            totals = [t if ok else mean for t, ok in zip(totals, seen, strict=True)]
        return totals

    def priorities(self, text: str, spans: Sequence[tuple[int, int]]) -> list[float]:
        return self.unit_scores(text, spans)


def perplexity_compressor(
    model=DEFAULT_MODEL,
    tokenizer=None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    window: int = 1024,
    overlap: int = 256,
    protect: ProtectSpec = None,
    counter=None,
) -> UnitCompressor:
    """``counter`` defaults to the scoring model's tokenizer (so achieved rates are in its tokens)."""
    scorer = CausalLMScorer(model, tokenizer, device=device, dtype=dtype, window=window, overlap=overlap)

    def model_tokenizer():
        scorer.load()
        return scorer.tokenizer

    return UnitCompressor("perplexity", scorer, counter if counter is not None else model_tokenizer, protect)
