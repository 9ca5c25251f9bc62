"""Run the serving benchmark (:mod:`promptintern.harness.serving`): prompts and adapters from a finished
experiment, vLLM's server(s), every (condition, load, repeat) as one record under ``<results_dir>/<name>/runs``.

Prompts. ``full``: the test prompts of the source's ``full_prompt_ft`` evaluation (system turn + template +
retrieved examples + query), ``query``: those of its ``query_only_ft`` evaluation (the query alone), rendered with
the model's chat template exactly as the harness rendered them (the token counts are checked against the
records). The first ``warmup`` items are the warm-up requests; the next ``requests`` the measured ones.

Adapters. A condition's ``model`` names a method of the source; its evaluation's adapter folder is served. Where
that folder is not on this machine (adapters are not committed), an adapter of the same shape (the source's
``train.lora``: rank, alpha, modules) with random weights is made and served instead, and every record says so:
with the output length fixed, what a request costs does not depend on the adapter's values. ``merged``: the
adapter merged into the base weights (PEFT's ``merge_and_unload``) and served by a second server without LoRA.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from promptintern.errors import ConfigError
from promptintern.models import load_tokenizer, resolve
from promptintern.vllm_engine import lora_rank_slot
from promptintern.vllm_server import BASE_NAME, VllmServer

from .artifacts import weights_sha256
from .env_info import hardware, versions
from .serving import ServingSettings, poisson_arrivals, run_id, run_load, summarize, synthetic_prompts
from .store import atomic_write_json

PROMPT_SOURCES = {"full": "full_prompt_ft", "query": "query_only_ft"}  # prompt kind -> the evaluation it is read from


def _evaluations(source: Path, eval_task: str) -> dict[str, dict]:
    """The source's on-task evaluation records by method label (the uncached one where both exist)."""
    out: dict[str, dict] = {}
    for f in sorted((source / "runs").glob("eval-*.json")):
        r = json.loads(f.read_text())
        c = r.get("config") or {}
        if r.get("status") != "ok" or c.get("eval_task") != eval_task or c.get("train_task") not in (None, eval_task):
            continue
        label = c["method"]["label"]
        if label not in out or not c.get("prefix_cache"):
            out[label] = r
    if not out:
        raise ConfigError("source", f"{source} has no finished evaluation on {eval_task!r} (runs/eval-*.json)")
    return out


def _method_record(evals: dict[str, dict], method: str, field: str) -> dict:
    hits = [r for label, r in evals.items() if label == method or r["config"]["method"]["name"] == method]
    if not hits:
        raise ConfigError(field, f"the source has no evaluation of {method!r}; it has {', '.join(sorted(evals))}")
    return hits[0]


def real_prompts(record: dict, tok, n: int, chat: bool = True) -> list[list[int]]:
    """The first ``n`` test prompts of an evaluation record as token ids, rendered as the harness rendered them."""
    if not chat and not all(s.get("rendered_prompt") for s in record["samples"][:n]):
        raise ConfigError("source", "prompts sent without the chat template (prompt.chat: false) are not kept whole "
                          "in the records: the serving benchmark cannot rebuild them")
    out = []
    for s in record["samples"][:n]:
        # what the sample record keeps of its prompt (promptintern/harness/samples.py): the exact text of a cued
        # plain-text layout, the whole conversation of a multi-turn one, else the system turn and the user turn
        messages = s.get("messages") or [*([{"role": "system", "content": s["system_prompt"]}]
                                           if s.get("system_prompt") else []), {"role": "user", "content": s["prompt"]}]
        text = s.get("rendered_prompt") or tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if s.get("rendered_prompt_tokens") not in (None, len(ids)):
            raise ConfigError("source", f"{s['id']}: rendering gives {len(ids)} tokens, the record says "
                              f"{s['rendered_prompt_tokens']} (another tokenizer or template?)")
        out.append(ids)
    if len(out) < n:
        raise ConfigError("requests", f"the source's evaluation has {len(out)} test items; warmup + requests = {n}")
    return out


def random_adapter(model_dir: str, lora: dict, folder: Path, seed: int) -> Path:
    """A PEFT adapter of the source's shape with random A and B (PEFT's init sets B = 0: no effect at all)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (folder / "adapter_config.json").is_file():
        return folder
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 16)), lora_dropout=0.0,
                     target_modules=lora.get("target_modules", "all-linear"), init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(folder)
    return folder


def merged_model(model_dir: str, adapter: Path, folder: Path) -> Path:
    """The base model with ``adapter`` merged into its weights, saved with its tokenizer (a model folder vLLM
    serves without LoRA)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (folder / "config.json").is_file():
        return folder
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(adapter))
    model.merge_and_unload().save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    return folder


def prepare(settings: ServingSettings, out: Path) -> dict:
    """Everything a run needs, checked before any server starts: the source's model, the prompts of each kind
    (warm-up + measured), and for each condition the adapter folder it serves and what its weights are."""
    source = Path(settings.source).expanduser().resolve()
    if not (source / "experiment.json").is_file():
        raise ConfigError("source", f"{source} is not a results folder (no experiment.json)")
    experiment = json.loads((source / "experiment.json").read_text())
    evals = _evaluations(source, settings.eval_task)
    model = (experiment.get("models") or [None])[0]
    if not model:
        raise ConfigError("source", f"{source}/experiment.json names no model")
    chat = bool((experiment.get("prompt") or {}).get("chat", True))
    lora = (experiment.get("train") or {}).get("lora") or {}
    tok = load_tokenizer(model)
    n = settings.warmup + settings.requests
    prompts: dict[str, list[list[int]]] = {}
    vocab = (1000, min(len(tok), 40000))
    for kind in {c.prompt for c in settings.conditions}:
        if kind in PROMPT_SOURCES:
            prompts[kind] = real_prompts(_method_record(evals, PROMPT_SOURCES[kind], "conditions.prompt"), tok, n,
                                         chat)
        else:
            prompts[kind] = synthetic_prompts(n, prefix_tokens=settings.synthetic_prefix_tokens,
                                              query_tokens=settings.synthetic_query_tokens,
                                              with_prefix=kind == "synthetic_full", seed=settings.seed, vocab=vocab)
    model_dir = resolve(model)
    served: dict[str, dict] = {}
    for i, c in enumerate(settings.conditions):
        if c.model == "base" or c.model in served:
            continue
        record = _method_record(evals, c.model, f"conditions[{i}].model")
        folder = source / record["adapter"] if record.get("adapter") else None
        if folder is not None and (folder / "adapter_config.json").is_file():
            served[c.model] = {"path": str(folder), "weights": "trained", "sha256": weights_sha256(folder)}
        else:
            made = random_adapter(model_dir, lora, out / "adapters" / f"{c.model.replace('/', '_')}-random",
                                  seed=settings.seed + i)
            served[c.model] = {"path": str(made), "weights": "random, the source's rank and modules (the trained "
                               f"adapter {record.get('adapter')} is not on this machine; timing only)",
                               "sha256": weights_sha256(made)}
    for c in settings.conditions:
        if c.merged:
            folder = out / "merged" / c.model.replace("/", "_")
            served[c.model]["merged"] = str(merged_model(model_dir, Path(served[c.model]["path"]), folder))
    return {"source": str(source), "model": model, "model_dir": model_dir, "chat": chat, "lora": lora,
            "prompts": prompts, "adapters": served,
            "max_model_len": max(len(p) for ps in prompts.values() for p in ps) + settings.output_tokens + 64}


def _server(settings: ServingSettings, model_dir: str, ready: dict, out: Path, *, lora: bool, tag: str):
    return VllmServer(model_dir, dtype=settings.dtype, max_lora_rank=lora_rank_slot(int(ready["lora"].get("r", 8))),
                      max_model_len=ready["max_model_len"], kv_cache_gib=settings.kv_cache_gib, lora=lora,
                      log_path=out / "logs" / f"server-{tag}.log", dev_mode=True)


def run_serving(settings: ServingSettings, *, command: str | None = None, log=print) -> Path:
    """Every (condition, load, repeat) of ``settings``, one record each under ``<results_dir>/<name>/runs``
    (a record already there is kept: a rerun resumes); returns the folder."""
    out = Path(settings.results_dir).expanduser().resolve() / settings.name
    ready = prepare(settings, out)
    atomic_write_json(out / "experiment.json", {"serving": settings.to_dict(), "command": command,
                                                "source": ready["source"], "model": ready["model"],
                                                "adapters": ready["adapters"]})
    hw, vers = hardware(), versions()
    # one server at a time (an idle vLLM CPU worker keeps polling a core): the LoRA server for every unmerged
    # condition, then one server per merged condition
    groups = [("lora", [c for c in settings.conditions if not c.merged])]
    groups += [(c.name, [c]) for c in settings.conditions if c.merged]
    for tag, conditions in groups:
        if not conditions:
            continue
        merged = conditions[0].merged
        model_dir = ready["adapters"][conditions[0].model]["merged"] if merged else ready["model_dir"]
        server = _server(settings, model_dir, ready, out, lora=not merged, tag=tag).start()
        try:
            vers["vllm"] = server.version()
            for c in conditions:
                if not merged and c.model != "base" and c.model not in server.adapters:
                    server.load_adapter(c.model, ready["adapters"][c.model]["path"])
            _run_group(settings, server, conditions, ready, out, {"hardware": hw, "versions": vers,
                                                                  "command": command}, log)
        finally:
            server.stop()
    return out


def _run_group(settings: ServingSettings, server, conditions: list, ready: dict, out: Path, meta: dict,
               log) -> None:  # fmt: skip
    """Every (condition, load, repeat) of the conditions one server serves; conditions alternate within a repeat
    and load level. A record already written is kept (a rerun resumes)."""
    for repeat in range(max(c.repeats or settings.repeats for c in conditions)):
        for k, (mode, level) in enumerate(settings.loads()):
            arrivals = poisson_arrivals(settings.requests, level, settings.seed + 1000 * repeat + k) \
                if mode == "rate" else None
            for c in conditions:
                rid = run_id(c.name, mode, level, repeat)
                path = out / "runs" / f"{rid}.json"
                if repeat >= (c.repeats or settings.repeats) or path.is_file():
                    continue
                model = BASE_NAME if c.merged or c.model == "base" else c.model
                prompts = ready["prompts"][c.prompt]
                server.reset_prefix_cache()  # every run starts cold: its warm-up brings the prefix in
                if settings.warmup:
                    run_load(server, model, prompts[:settings.warmup], mode="concurrency", level=settings.warmup,
                             output_tokens=settings.output_tokens, cache=c.cache)
                t0 = time.time()
                requests, duration = run_load(server, model, prompts[settings.warmup:], mode=mode, level=level,
                                              output_tokens=settings.output_tokens, cache=c.cache, arrivals=arrivals)
                summary = summarize(requests, duration, settings.slo)
                atomic_write_json(path, {
                    "schema_version": 1, "kind": "serving", "run_id": rid, "condition": c.__dict__, "mode": mode,
                    "level": level, "repeat": repeat, "started_unix": t0, "adapter": ready["adapters"].get(c.model),
                    "server": " ".join(server.args[1:]), "summary": summary, "requests": requests,
                    "arrivals_s": arrivals, "settings": settings.to_dict(), "source": ready["source"],
                    "model": ready["model"], **meta})
                log(f"{rid}: {summary['output_throughput']:.1f} output tok/s, TTFT median "
                    f"{summary['ttft']['median'] * 1000:.0f} ms, TPOT median "
                    f"{(summary['tpot']['median'] or 0) * 1000:.0f} ms ({duration:.1f} s)")
