"""MetaTuner's data selection: D2 (the rollouts whose answers reached the threshold) and the query-relevant
sentences of the seed prompt that G's "relevant" warm-up target uses."""

from __future__ import annotations

import re


# ------------------------------------------------------------------------------------------------ D2
def select_d2(
    ids: list[str],
    prompts: list[list[str]],
    scores: list[list[float | None]],
    threshold: float,
    max_per_query: int,
) -> list[dict]:
    """D2 = {(x_i, p_i*)}: for each query, its distinct rollout prompts whose answer scored >= threshold
    (best first, at most ``max_per_query``). Prompts whose answer missed the threshold never enter."""
    out = []
    for qid, ps, ss in zip(ids, prompts, scores, strict=True):
        ranked = sorted(
            ((p, s) for p, s in zip(ps, ss, strict=True) if s is not None and s >= threshold),
            key=lambda ps_: -ps_[1],
        )
        seen: set[str] = set()
        for p, s in ranked:
            if p in seen:
                continue
            seen.add(p)
            out.append({"id": qid, "prompt": p, "score": float(s)})
            if len(seen) >= max_per_query:
                break
    return out


def best_rollouts(ids: list[str], prompts: list[list[str]], scores: list[list[float | None]],
                  floor: float | None = None) -> list[dict]:  # fmt: skip
    """D2 when no rollout reached the threshold: each query's best-scoring rollout prompt, for the better half of
    the queries by that score (at least one; ties keep the queries' order) — counting only rollouts that scored
    above ``floor`` (default: the lowest score of all): when every rollout ties (a binary metric and an actor
    that never succeeds) there is no reward signal to rank by, and D2 stays empty (the rebuild's record says
    so)."""
    flat = [float(x) for ss in scores for x in ss if x is not None]
    if not flat:
        return []
    floor = min(flat) if floor is None else floor
    best = []
    for qid, ps, ss in zip(ids, prompts, scores, strict=True):
        scored = [(float(s), p) for p, s in zip(ps, ss, strict=True) if s is not None and p.strip() and s > floor]
        if scored:
            s, p = max(scored, key=lambda x: x[0])
            best.append({"id": qid, "prompt": p, "score": s})
    best.sort(key=lambda d: -d["score"])
    return best[: max(1, len(best) // 2)] if best else []


ANSWER_RULE_CUES = ("####", "respond with", "answer with", "reply with", "final line", "return only", "output only")
STOPWORDS = frozenset("the and for with that this from are was were you your what which who how into onto its "
                      "use using all any can will not but has have had one two per each given write".split())


def _content_words(text: str) -> set[str]:

    return {w for w in re.findall(r"[a-z0-9_#]+", text.lower()) if len(w) >= 3 and w not in STOPWORDS}


def relevant_sentences(seed_prompt: str, query: str, tokenizer, max_tokens: int) -> str:
    """G's per-query warm-up target ``relevant``: the seed prompt's rule for the answer's form (the sentence with
    most cues such as ``####``, "respond with", "final line"; at most half the budget), then the sentences
    sharing most content words with the query while they fit in ``max_tokens``, in the seed prompt's order
    (markdown headings dropped; its first sentence when nothing qualifies), then, in what is left, "Focus:" and
    what the query asks (its question sentence). What the query does not touch is left out, so queries get
    different targets."""

    lines = [x for x in seed_prompt.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    sentences = [x.strip(" -*") for line in lines for x in re.split(r"(?<=[.!?])\s+", line) if x.strip(" -*")]
    if not sentences:
        return ""
    words = _content_words(query)
    overlap = [len(words & _content_words(x)) for x in sentences]
    cues = [sum(c in x.lower() for c in ANSWER_RULE_CUES) for x in sentences]
    rule = max(range(len(sentences)), key=lambda i: (cues[i], -i)) if max(cues) else None
    ranked = ([rule] if rule is not None else []) + sorted(
        (i for i in range(len(sentences)) if overlap[i] and i != rule), key=lambda i: (-overlap[i], i))
    # the answer rule takes at most half the budget (cut), and a third is kept for what the query asks
    asked = _asked(query)
    budget = max_tokens - (max_tokens // 3 if asked and max_tokens >= 18 else 0)
    parts: dict[int, str] = {}
    used = 0
    for i in ranked or [0]:
        ids = tokenizer(sentences[i], add_special_tokens=False)["input_ids"]
        if i == rule and len(ids) > budget // 2 and (overlap.count(0) < len(overlap) or asked):
            ids = ids[: max(1, budget // 2)]
        if parts and used + len(ids) > budget:
            continue
        parts[i] = tokenizer.decode(ids).strip()
        used += len(ids)
    text = " ".join(parts[i] for i in sorted(parts))
    # query-specific guidance in what is left of the budget: what this query asks for (its question sentence)
    room = max_tokens - len(tokenizer(text, add_special_tokens=False)["input_ids"]) - 3
    if asked and room >= 6:
        focus = tokenizer.decode(tokenizer(asked, add_special_tokens=False)["input_ids"][:room]).strip()
        text = f"{text} Focus: {focus}" if text else f"Focus: {focus}"
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])


def _asked(query: str) -> str:
    """The sentence of a query that says what is asked: its last question, else its first sentence (a task
    statement), without a leading "Question:" label and without code or test lines."""

    lines = [x.strip() for x in query.splitlines() if x.strip() and not x.strip().startswith(("assert", "```", ">>>"))]
    text = re.sub(r"^(question|q|task)\s*:\s*", "", " ".join(lines), flags=re.I)
    sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", text) if x.strip()]
    questions = [x for x in sentences if x.endswith("?")]
    return questions[-1] if questions else (sentences[0] if sentences else "")
