"""The engine measurement: every serving condition of one (model, eval task, seed) timed on the same requests,
decoding the same fixed number of tokens, interleaved, on one machine held alone.

What it isolates. An evaluation's own generation mixes what a prompt costs with how long each method's answers
are (a method that answers in 102 tokens looks slower than one that answers in 43 with the same prompt). Here
every condition decodes exactly ``timing.max_new_tokens`` (L) tokens with the end of sequence ignored, on the
same timed queries, so a ratio between two conditions is what their prompts cost. Conditions: every evaluation of
the group (its adapter merged into the worker's base model, :class:`promptintern.adapter_host.AdapterHost`), served
with the full prompt uncached and, for methods that send a fixed template under ``generation.prefix_cache``, with
its recurring prefix's KV cache reused (:mod:`promptintern.prefix_cache`).

What it times (names and definitions as vLLM's serving benchmark):

- **batch 1**: each of the first ``timing.queries`` test queries alone, ``timing.repeats`` times: TTFT (prefill,
  and the prefix copy), every token's time (ITL: inter-token latency), TPOT = (E2EL − TTFT) / (L − 1), E2EL.
  Each request decodes max(L, its condition's real answer length up to ``timing.answered_max_tokens``) tokens, so
  the **as-answered** latency (the real answer's last token) is measured too, not modelled;
- **saturation**: static batches of every size in ``timing.batch_sizes``, ``timing.sweep_requests`` requests per
  size (the timed queries cycled; batch j holds the same queries in every condition), each L tokens: request
  throughput, output token throughput, TTFT and TPOT per batch, goodput under the declared objective
  (``timing.slo``) and accuracy-qualified goodput (requests within the objective whose answer scored correct).

Interleaving. Each repeat is cut into ``timing.rounds`` rounds; in every round each condition in turn (the order
rotated by repeat and round) times its share: the batch-1 queries and the sweep batches whose index falls in that
round. Every condition's requests are thus spread over the whole unit, and the requests a ratio pairs (the same
query, the same batch index) are timed within one round of each other, so a slow minute of the machine falls on
both. The unit asks Ray for ``timing.num_cpus`` CPUs (all of a small machine, so no other unit runs beside it) and
holds the machine-wide timing lock (``timing.exclusive``).

The record (:class:`promptintern.harness.records.EngineRecord`) keeps every timed request and batch; every figure of the tables
is derived from it (:mod:`promptintern.harness.efficiency`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from promptintern.generation import pad_batch, static_cache_len, timed_fixed, warm_up
from promptintern.prefix_cache import prefix_for
from promptintern.progress import track
from promptintern.prompts import render

from .artifacts import adapter_problem
from .measure import exclusive_timing, model_info
from .plan import CACHED_SUFFIX
from .records import engine_record
from .settings import TimingSettings
from .store import ResultStore
from .unit_common import adapter_host, run_meta, set_threads, task_data, test_prompts


@dataclass
class Condition:
    """One serving condition: an evaluation's adapter and prompts, uncached or with its prefix cached."""

    eval_id: str
    label: str
    cached: bool
    adapter: str | None
    prompts: list  # promptintern Prompt objects of the timed queries
    rendered: list[str]
    ids: list[str]
    answer_tokens: dict[str, int]
    compressor_s: dict[str, float]

    def summary(self) -> dict:
        return {"eval": self.eval_id, "label": self.label, "prefix_cache": self.cached}


def load_conditions(unit: dict, store: ResultStore, tok, data_dir: str | None, n: int) -> list[Condition]:
    """The unit's conditions with everything timing needs, checked: each evaluation's record is valid, its adapter
    is the one it evaluated (weights hash), and the rebuilt prompts have the token counts it recorded."""
    out, built_of = [], {}
    chat = unit["config"]["chat"]
    for c in unit["config"]["conditions"]:
        rec = store.read(c["eval"], require_artifacts=False)
        if rec is None:
            raise RuntimeError(f"evaluation {c['eval']} has no valid record: the engine measurement times what an "
                               "evaluation scored")
        adapter = None
        if rec.get("adapter"):
            adapter = str((store.root / rec["adapter"]).resolve()) if not Path(rec["adapter"]).is_absolute() \
                else rec["adapter"]
            problem = adapter_problem(adapter, rec.get("adapter_sha256"))
            if problem:
                raise RuntimeError(f"evaluation {c['eval']}: adapter {problem} (its stage was trained again "
                                   "since? run the grid again)")
        if c["eval"] not in built_of:  # both serving conditions of an evaluation time the same prompts
            built_of[c["eval"]] = test_prompts(rec["config"], task_data(unit, rec["config"]["eval_task"], data_dir), n)
        built = built_of[c["eval"]]
        rendered = [render(b.prompt, tok, chat) for b in built]
        by_id = {str(s["id"]): s for s in rec.get("samples") or []}
        for b, r in zip(built, rendered, strict=True):
            s = by_id.get(str(b.example.id))
            got = len(tok(r, add_special_tokens=False)["input_ids"])
            if s is None or s.get("rendered_prompt_tokens") != got:
                raise RuntimeError(f"evaluation {c['eval']}, item {b.example.id}: the rebuilt prompt has {got} tokens, "
                                   f"the evaluation recorded {None if s is None else s.get('rendered_prompt_tokens')}"
                                   ": the engine would time another prompt than the one scored")
        ids = [str(b.example.id) for b in built]
        out.append(Condition(
            eval_id=c["eval"], label=rec["config"]["method"]["label"] + (CACHED_SUFFIX if c["prefix_cache"] else ""),
            cached=bool(c["prefix_cache"]), adapter=adapter, prompts=[b.prompt for b in built], rendered=rendered,
            ids=ids, answer_tokens={i: int(by_id[i]["output_tokens"]) for i in ids},
            compressor_s={i: float(by_id[i].get("compressor_s") or 0.0) for i in ids}))
    return out


def _batches(ids: list[str], size: int, requests: int) -> list[list[int]]:
    """Indices of the timed queries, cycled, cut into ceil(requests / size) batches of ``size``."""
    k = -(-requests // size)
    flat = [i % len(ids) for i in range(k * size)]
    return [flat[j * size:(j + 1) * size] for j in range(k)]


def _sweep(ids: list[str], s: TimingSettings) -> list[tuple[int, int, list[int]]]:
    """The sweep batches of a condition: (batch size, index, query indices) for every size beyond 1."""
    return [(b, j, idx) for b in sorted({int(x) for x in s.batch_sizes if int(x) > 1})
            for j, idx in enumerate(_batches(ids, b, s.sweep_requests))]


@dataclass
class _Work:
    """One condition's timed work, computed once: its encoded queries, each request's decode length, the static
    cache length, and the sweep batches (size, index, query indices)."""

    encoded: list[list[int]]
    decode: list[int]
    cache_len: int
    batches: list[tuple[int, int, list[int]]]


def _work(tok, cond: Condition, s: TimingSettings) -> _Work:
    encoded = [tok(r, add_special_tokens=False)["input_ids"] for r in cond.rendered]
    cap = s.answered_max_tokens
    decode = [max(s.max_new_tokens, min(cond.answer_tokens[i], cap) if cap else cond.answer_tokens[i])
              for i in cond.ids]
    return _Work(encoded, decode, static_cache_len([len(e) for e in encoded], max(decode + [s.max_new_tokens])),
                 _sweep(cond.ids, s))


def time_share(model, tok, cond: Condition, w: _Work, s: TimingSettings, engine: str, prefix, repeat: int,
               queries: list[int], batches: list[int], warm: bool) -> dict:
    """Time a share of one condition's work: the batch-1 requests of ``queries`` (indices of its timed queries),
    then the sweep batches ``batches`` (indices into ``w.batches``); ``warm``: one untimed request first (the
    condition's first share of a repeat). What each request and batch took."""
    device = next(model.parameters()).device
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cached = prefix.tokens if prefix is not None else 0
    if warm:
        timed_fixed(model, tok, pad_batch(tok, [w.encoded[0]], device, prefix), 2, engine, w.cache_len, prefix)
    requests = []
    for i in queries:
        e, n = w.encoded[i], w.decode[i]
        t = timed_fixed(model, tok, pad_batch(tok, [e], device, prefix), n, engine, w.cache_len, prefix)
        requests.append({"id": cond.ids[i], "index": i, "repeat": repeat, "tokens": n, "prompt_tokens": len(e),
                         "prefill_tokens": len(e) - cached, "ttft_s": t["ttft_s"], "e2e_s": t["e2e_s"],
                         "token_times": None if t["token_times"] is None else [round(x, 6) for x in t["token_times"]]})
    out = []
    for k in batches:
        b, j, idx = w.batches[k]
        rows = [w.encoded[i] for i in idx]
        warm_up(model, tok, rows, engine, w.cache_len)
        t = timed_fixed(model, tok, pad_batch(tok, rows, device, prefix), s.max_new_tokens, engine, w.cache_len,
                        prefix)
        out.append({"batch_size": b, "index": j, "repeat": repeat, "ids": [cond.ids[i] for i in idx],
                    "prompt_tokens": sum(map(len, rows)), "prefill_tokens": sum(map(len, rows)) - cached * b,
                    "ttft_s": t["ttft_s"], "e2e_s": t["e2e_s"]})
    return {"requests": requests, "batches": out}


def time_interleaved(conds: list[Condition], tok, s: TimingSettings, engine: str, activate, on_share=None) -> list:
    """Time every condition, interleaved (see the module docstring): per repeat, ``s.rounds`` rounds; in each round
    every condition in turn (the order rotated by repeat and round) times its share: the batch-1 queries and the
    sweep batches whose index falls in that round. ``activate(condition) -> (model, prefix or None)`` readies a
    condition (its adapter merged, its prefix's KV). Returns per condition {"requests", "batches"}."""
    work = [_work(tok, c, s) for c in conds]
    n = max([len(c.ids) for c in conds] + [len(w.batches) for w in work] + [1])
    rounds = max(1, min(int(s.rounds), n))
    timed = [{"requests": [], "batches": []} for _ in conds]
    for r in range(s.repeats):
        for k in range(rounds):
            for c in range(len(conds)):
                i = (c + r + k) % len(conds)  # rotated: every condition takes every place in the order
                cond, w = conds[i], work[i]
                queries = [q for q in range(len(cond.ids)) if q % rounds == k]
                batches = [b for b in range(len(w.batches)) if w.batches[b][1] % rounds == k]
                if not queries and not batches:
                    continue
                model, prefix = activate(cond)
                out = time_share(model, tok, cond, w, s, engine, prefix, r, queries, batches, warm=(k == 0))
                timed[i]["requests"] += out["requests"]
                timed[i]["batches"] += out["batches"]
                if on_share is not None:
                    on_share(len(queries) + len(batches))
    for t in timed:  # in query (batch) order, repeat by repeat, as a pass of each condition would have them
        t["requests"].sort(key=lambda x: (x["repeat"], x["index"]))
        t["batches"].sort(key=lambda x: (x["repeat"], x["batch_size"], x["index"]))
    return timed


def run_engine(unit: dict, store_root: str, data_dir: str | None) -> dict:
    """Time every condition of the unit (see the module docstring); write and return the engine record."""
    cfg, uid = unit["config"], unit["id"]
    s = TimingSettings.from_dict(cfg["timing"])
    set_threads(unit["resources"].get("num_cpus"))
    store = ResultStore(store_root)
    t0 = time.perf_counter()
    host, load = adapter_host(cfg["model"])
    tok = host.tokenizer
    conds = load_conditions(unit, store, tok, data_dir, s.queries)
    engine = cfg["engine"]
    prefixes: dict[int, object] = {}

    def activate(cond: Condition):
        if host.active != cond.adapter:  # the same adapter merged again gives the same weights (and prefix key)
            host.activate(cond.adapter)
        prefix = None
        if cond.cached:
            if id(cond) not in prefixes:
                prefixes[id(cond)] = prefix_for(host.model, tok, cond.prompts, cond.rendered, cfg["chat"])
            prefix = prefixes[id(cond)]
        return host.model, prefix

    total = s.repeats * sum(len(c.ids) + len(_sweep(c.ids, s)) for c in conds)
    counter = track("requests and sweep batches timed, every condition in turn", total)
    with exclusive_timing(s.exclusive) as lock:
        timed = time_interleaved(conds, tok, s, engine, activate, on_share=counter.advance)
        info = model_info(host.model)
    conditions = [{**c.summary(), "ids": c.ids, "answer_tokens": c.answer_tokens, "compressor_s": c.compressor_s,
                   **timed[i], "prefix": [prefixes[id(c)].summary()] if id(c) in prefixes else []}
                  for i, c in enumerate(conds)]
    record = engine_record(config=cfg, settings=s.to_dict(), conditions=conditions, meta=run_meta(),
                           model_info={**info, "load": load}, timing_lock=lock,
                           seconds_total=time.perf_counter() - t0)
    store.write(uid, record)
    return record
