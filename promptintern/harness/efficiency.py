"""Efficiency figures of every serving condition, derived from the result records only.

Two views, each labelled in every table:

- **engine** (equal length), from the engine records (:mod:`promptintern.harness.engine_unit`): every condition decoded the
  same L tokens on the same requests. Batch 1: TTFT, TPOT, ITL, E2EL of L tokens. Saturation (the largest batch
  of the sweep): request throughput, output token throughput, TTFT and TPOT of the batch. Goodput: requests per
  second within the declared objective (``timing.slo``: TTFT and TPOT both within), best over the batch sizes
  timed (batch 1 included); accuracy-qualified goodput counts only the requests whose answer scored correct.
- **as answered**: each timed request's own answer length (its evaluation's output tokens for that query),
  measured at batch 1 to its last token (the engine unit decodes at least that far, up to
  ``timing.answered_max_tokens``; a longer answer adds its request's TPOT per missing token, and the count of such
  requests is kept). Older records (schema 1, or ``generation.measure``) carry their own batch-1 latencies of
  their answers: read as this view, the engine view then absent.

Cost comes from each request's own compute: at saturation the price per second of the machine the engine unit
held over its request throughput; at batch 1 the request's own end-to-end time times that price. The compressor
time of compression at inference is added to every one of its requests (at saturation as serial work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .measure import percentile, query_latency

NAN = float("nan")


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else NAN


@dataclass
class Timings:
    """What comparisons need of one condition: per cluster (query id, or batch index) the repeated measurements."""

    engine_b1: dict[str, list[float]] = field(default_factory=dict)  # E2EL of L tokens at batch 1
    answered: dict[str, list[float]] = field(default_factory=dict)  # E2EL to the real answer's end at batch 1
    saturation: dict[str, list[float]] = field(default_factory=dict)  # seconds of batch j at the saturation size
    saturation_batch: int | None = None

    def merged(self, other: Timings) -> Timings:
        """Two seeds' timings of one grid point: their measurements pooled per cluster."""
        def join(a, b):
            return {k: list(a.get(k, [])) + list(b.get(k, [])) for k in {*a, *b}}
        same = self.saturation_batch == other.saturation_batch
        return Timings(join(self.engine_b1, other.engine_b1), join(self.answered, other.answered),
                       join(self.saturation, other.saturation) if same else {},
                       self.saturation_batch if same else None)


def request_times(req: dict, L: int, answer_tokens: int, compressor_s: float = 0.0) -> dict:
    """One batch-1 request's TTFT, TPOT, E2EL of L tokens and as-answered E2EL (seconds, compressor included), and
    whether the as-answered end had to be extended past what was decoded."""
    t = req.get("token_times")
    n = int(req["tokens"])
    ttft = float(req["ttft_s"])
    if t:
        e2el = t[L - 1]
        tpot = (t[L - 1] - t[0]) / (L - 1)
        itl = [b - a for a, b in zip(t[:L - 1], t[1:L], strict=True)]
    else:  # an engine with no per-token clock (fast): its mean step time
        tpot = (float(req["e2e_s"]) - ttft) / (n - 1) if n > 1 else NAN
        e2el = float(req["e2e_s"]) if n == L else ttft + tpot * (L - 1)
        itl = []
    k = max(1, int(answer_tokens))
    if t and k <= len(t):
        answered, extended = t[k - 1], False
    else:
        last = t[-1] if t else float(req["e2e_s"])
        answered, extended = last + max(0, k - n) * tpot, k > n
    c = float(compressor_s or 0.0)
    return {"ttft": ttft + c, "tpot": tpot, "e2el": e2el + c, "answered": answered + c, "extended": extended,
            "itl": itl}


def within(ttft: float, tpot: float, slo: dict) -> bool:
    return ttft <= float(slo["ttft_s"]) and tpot <= float(slo["tpot_s"])


def condition_figures(cond: dict, settings: dict, correct: dict[str, bool]) -> tuple[dict, Timings]:
    """The engine and as-answered figures of one condition of an engine record (seconds; no prices), and the
    per-cluster timings comparisons pair on."""
    L = int(settings["max_new_tokens"])
    slo = settings["slo"]
    per = [(r, request_times(r, L, cond["answer_tokens"][r["id"]], cond["compressor_s"].get(r["id"], 0.0)))
           for r in cond["requests"]]
    tm = Timings()
    for r, x in per:
        tm.engine_b1.setdefault(r["id"], []).append(x["e2el"])
        tm.answered.setdefault(r["id"], []).append(x["answered"])
    comp = _mean(cond["compressor_s"].values()) if cond["compressor_s"] else 0.0
    # batch 1 as a point of the sweep: requests one after another
    b1_seconds = sum(x["e2el"] for _, x in per)
    points = {1: {"rps": len(per) / b1_seconds if b1_seconds else NAN,
                  "ttft": _mean(x["ttft"] for _, x in per), "tpot": _mean(x["tpot"] for _, x in per),
                  "good": sum(within(x["ttft"], x["tpot"], slo) for _, x in per) / b1_seconds if b1_seconds else NAN,
                  "good_correct": sum(within(x["ttft"], x["tpot"], slo) and correct.get(r["id"], False)
                                      for r, x in per) / b1_seconds if b1_seconds else NAN}}
    for b in sorted({int(x["batch_size"]) for x in cond["batches"]}):
        rows = [x for x in cond["batches"] if int(x["batch_size"]) == b]
        # the compressor runs per request before the batch: serial work added to the batch's seconds
        secs = sum(float(x["e2e_s"]) + comp * b for x in rows)
        ok = [(x, within(float(x["ttft_s"]) + comp, (float(x["e2e_s"]) - float(x["ttft_s"])) / (L - 1), slo))
              for x in rows]
        points[b] = {"rps": b * len(rows) / secs if secs else NAN,
                     "ttft": _mean(float(x["ttft_s"]) + comp for x in rows),
                     "tpot": _mean((float(x["e2e_s"]) - float(x["ttft_s"])) / (L - 1) for x in rows),
                     "good": sum(b for x, w in ok if w) / secs if secs else NAN,
                     "good_correct": sum(sum(correct.get(i, False) for i in x["ids"]) for x, w in ok if w) / secs
                     if secs else NAN}
    sat = max(points)
    if sat > 1:
        tm.saturation_batch = sat
        for x in cond["batches"]:
            if int(x["batch_size"]) == sat:
                tm.saturation.setdefault(str(x["index"]), []).append(float(x["e2e_s"]) + comp * sat)
    else:  # no sweep: batch 1 is the saturation point, its clusters the queries
        tm.saturation_batch = 1
        tm.saturation = tm.engine_b1
    best_good = max(points, key=lambda b: (points[b]["good"], -b))
    best_acc = max(points, key=lambda b: (points[b]["good_correct"], -b))
    e2el = [x["e2el"] for _, x in per]
    answered = [x["answered"] for _, x in per]
    figures = {
        "engine_L": L, "engine_queries": len(tm.engine_b1), "engine_requests": len(per),
        "engine_repeats": int(settings.get("repeats") or 1),
        "ttft_s": _mean(x["ttft"] for _, x in per), "tpot_s": _mean(x["tpot"] for _, x in per),
        "itl_p50_s": percentile([i for _, x in per for i in x["itl"]], 50),
        "e2el_s": _mean(e2el), "e2el_p50_s": percentile(e2el, 50), "e2el_p90_s": percentile(e2el, 90),
        "sat_batch": sat, "sat_rps": points[sat]["rps"], "sat_tok_s": points[sat]["rps"] * L,
        "sat_ttft_s": points[sat]["ttft"], "sat_tpot_s": points[sat]["tpot"],
        "goodput_rps": points[best_good]["good"], "goodput_batch": best_good,
        "acc_goodput_rps": points[best_acc]["good_correct"], "acc_goodput_batch": best_acc,
        "slo": f"TTFT ≤ {slo['ttft_s']:g} s, TPOT ≤ {slo['tpot_s']:g} s",
        "answered_e2el_s": _mean(answered), "answered_p50_s": percentile(answered, 50),
        "answered_p90_s": percentile(answered, 90),
        "answered_output_tokens": _mean(cond["answer_tokens"][r["id"]] for r, _ in per),
        "answered_extended": sum(x["extended"] for _, x in per),
        "prefill_tokens_timed": _mean(r["prefill_tokens"] for r, _ in per),
        "sweep": {b: {k: v for k, v in p.items()} for b, p in points.items()},
        "timing_source": "engine",
    }
    return figures, tm


def legacy_figures(rec: dict) -> tuple[dict, Timings]:
    """The as-answered view of an evaluation record that timed itself (schema 1, ``generation.measure``, MetaTuner):
    its batch-1 latencies (measurement samples, or main-run samples that ran at batch 1); no engine view."""
    lat = ((rec.get("measurements") or {}).get("latency") or {}).get("samples") or \
        [s for s in rec.get("samples") or [] if s.get("batch_size") == 1]
    tm = Timings()
    for s in lat:
        tm.answered.setdefault(str(s["id"]), []).append(query_latency(s)[1])
    answered = [query_latency(s)[1] for s in lat]
    cap = ((rec.get("measurements") or {}).get("latency") or {}).get("max_new_tokens")
    return {"answered_e2el_s": _mean(answered), "answered_p50_s": percentile(answered, 50),
            "answered_p90_s": percentile(answered, 90),
            "answered_output_tokens": _mean(s.get("output_tokens") for s in lat),
            "answered_queries": len(tm.answered), "answered_cap": cap,
            "timing_source": "evaluation, batch 1" if lat else "not measured"}, tm


def correct_items(rec: dict, correct_at: float | None) -> dict[str, bool]:
    """Item id -> whether its answer counts as correct for accuracy-qualified goodput: the primary score reaches
    ``correct_at`` on the display scale, or (None) the metric's best score (1 for fractions, 100 for BLEU-like)."""
    from .aggregate import SCALE_100_METRICS, display_score

    primary = rec["task"]["primary_metric"]
    best = 100.0 if primary in SCALE_100_METRICS else 1.0
    out = {}
    for s in rec.get("samples") or []:
        v = (s.get("score") or {}).get(primary)
        if isinstance(v, int | float):  # bools too
            v = float(v)
            out[str(s["id"])] = display_score(primary, v) >= correct_at if correct_at is not None else v >= best
    return out


def engine_conditions(store) -> dict[tuple[str, bool], tuple[dict, dict, dict]]:
    """(evaluation id, cached) -> (condition, settings, engine record) over every engine record of the store."""
    out = {}
    for rec in store.records(kind="engine"):
        for c in rec.get("conditions") or []:
            out[(c["eval"], bool(c["prefix_cache"]))] = (c, rec["settings"], rec)
    return out


def price_per_second(table, hardware: dict, key: str | None = None) -> tuple[float, str | None]:
    """USD per second of the machine a measurement held (the hardware entry's units: GPUs, cores or instances)."""
    entry = table.hardware_entry(hardware or {}, key) if table is not None else None
    if entry is None:
        return NAN, None
    return entry.usd_per_second(hardware or {}), entry.key


def priced(figures: dict, usd_per_s: float) -> dict:
    """USD per 1k queries from the figures: engine at saturation (price / request throughput), engine at batch 1
    and as answered at batch 1 (price x the request's end-to-end time)."""
    return {"engine_usd_per_1k": 1000.0 * usd_per_s / figures["sat_rps"] if figures.get("sat_rps") else NAN,
            "engine_b1_usd_per_1k": 1000.0 * usd_per_s * figures.get("e2el_s", NAN),
            "answered_usd_per_1k": 1000.0 * usd_per_s * figures.get("answered_e2el_s", NAN)}
