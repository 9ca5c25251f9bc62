"""Stop strings, applied to the generated continuation only, and aware of code fences.

Why this module exists: transformers' ``stop_strings`` criterion matches against the whole sequence, prompt
included. A chat prompt ends with ``"<|im_start|>assistant\\n"``; when the first generated token is a fence,
``"\\n```"`` is matched across the prompt/answer boundary and every fenced answer ends after one token. Here
the text searched is the decoded continuation and nothing else, so a stop string can only be found in what the
model wrote (it may still span token boundaries inside the continuation).

Fences: a stop string must not cut an opened code fence before its content. NL2Bash stops at ``"\\n"``, but
``"```bash\\nfind . -name x\\n```"`` must keep its command; MBPP stops at ``"\\n```"``, but a preamble line
followed by ``"\\n```python"`` must go on to the code. The rule (``fence_aware``, the default): an occurrence of a
stop string counts only when the number of ````` markers in the text up to the end of the occurrence is
even, i.e. the occurrence neither opens a fence nor lies inside an open one. The closing fence of a block
(``"\\n```"`` after the code) ends with an even count and stops; a ``"\\n"`` after the closing fence stops.

:func:`find_stop` is the one definition; the `generate` criterion (:class:`ContinuationStop`), the fast
engine's check, the cut applied to every answer (:func:`cut_at_stop`) and the lm-eval export all call it.
"""

from __future__ import annotations

from collections.abc import Sequence

FENCE = "```"
# Bump when the rule changes: it enters every evaluation unit's identity (results scored under another rule
# are re-run, not reused).
STOP_RULE_VERSION = 2


def match_stop(text: str, stop: Sequence[str] | None, fence_aware: bool = True) -> tuple[int, str] | None:
    """(index, stop string) of the first occurrence in ``text`` of a stop string that counts, or None."""
    best: tuple[int, str] | None = None
    for s in stop or ():
        if not s:
            continue
        start = text.find(s)
        while start != -1 and (best is None or start < best[0]):
            if not fence_aware or text.count(FENCE, 0, start + len(s)) % 2 == 0:
                best = (start, s)
                break
            start = text.find(s, start + 1)
    return best


def find_stop(text: str, stop: Sequence[str] | None, fence_aware: bool = True) -> int | None:
    """Index in ``text`` where the first stop string that counts begins, or None."""
    m = match_stop(text, stop, fence_aware)
    return None if m is None else m[0]


def cut_at_stop(text: str, stop: Sequence[str] | None, fence_aware: bool = True) -> str:
    """``text`` up to (not including) its first stop string that counts. Idempotent."""
    i = find_stop(text, stop, fence_aware)
    return text if i is None else text[:i]


def has_stop(text: str, stop: Sequence[str] | None, fence_aware: bool = True) -> bool:
    return find_stop(text, stop, fence_aware) is not None


def stop_token_count(tokenizer, row: Sequence[int], stop: Sequence[str] | None, fence_aware: bool = True) -> int | None:
    """The number of leading tokens of ``row`` (a continuation) whose text first holds a stop string that
    counts; None when no prefix does. Binary search: once a prefix holds a counted stop, every longer one does."""
    row = list(row)

    def hit(k: int) -> bool:
        return has_stop(tokenizer.decode(row[:k], skip_special_tokens=True), stop, fence_aware)

    if not stop or not row or not hit(len(row)):
        return None
    lo, hi = 1, len(row)
    while lo < hi:
        mid = (lo + hi) // 2
        if hit(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def rows_stopped(tokenizer, continuations, stop: Sequence[str], fence_aware: bool = True) -> list[bool]:
    """For each row of continuation token ids (a 2-D tensor or lists), whether its text holds a counted stop."""
    rows = continuations.tolist() if hasattr(continuations, "tolist") else [list(r) for r in continuations]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    return [has_stop(t, stop, fence_aware) for t in texts]


def continuation_criterion(tokenizer, stop: Sequence[str], prompt_width: int, fence_aware: bool = True):
    """A `generate` stopping criterion: a row is done once the text it generated (the tokens after the
    ``prompt_width`` input positions, never the prompt) holds a stop string that counts. Per row: finished rows
    are padded by `generate` while the others go on."""
    import torch
    from transformers import StoppingCriteria

    class ContinuationStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            done = rows_stopped(tokenizer, input_ids[:, prompt_width:], stop, fence_aware)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return ContinuationStop()
