"""A MetaTuner unit: train (or load) a MetaTuner on the train task, evaluate it on the eval task, write ONE
eval-kind record (eval_unit's schema plus MetaTuner's own keys) and keep G's and F's weights as artefacts.

Unit config keys read (``unit["config"]``):

- ``model``: the actor M (and G unless ``method.options.generator_model`` names another model)
- ``seed``; ``method``: ``{name: "metatuner", label, options: {...MetaTunerConfig fields}}``; the label
  defaults to :func:`promptintern.metatuner.method_label` of the options ("metatuner-J/no-param" ...)
- ``train_task``, ``eval_task`` (either may be missing: it then equals the other); the items are ``unit["inputs"]``
- ``generation``: ``{batch_size, max_new_tokens}`` (null max_new_tokens: the task's own), and the measurement
  keys of :mod:`promptintern.harness.measure` (``measure``, ``throughput_batch_sizes``, ``throughput_max_new_tokens``,
  ``latency_samples``, ``latency_max_new_tokens``), applied to the whole pipeline
- ``prompt.chat`` (default true); ``unit["resources"]["num_cpus"]`` sets torch's threads.

Artefacts: ``ResultStore(store_root).adapter_dir(unit_id)`` holds ``generator_lora.safetensors`` (G's LoRA
slots: φ_s, φ_p, φ_p', separate encoder), ``hypernet.safetensors`` (F), ``actor_warmup/`` (M's SFT adapter),
``meta.json`` and ``metatuner_curve.json`` (losses per step, rollouts and D2 sizes, syncs, seconds). The SFT
warm-ups are cached under ``<store>/adapters/metatuner-warmup/`` and shared by the variants of a grid.

The record's ``diagnostics`` (:mod:`promptintern.metatuner.diagnostics`): ``prompts`` (distinct / degenerate
generated prompts of the test samples, their lengths in words and in M's tokens), ``delta_w`` (the spread of
the test queries' ΔW_i = λ B_i A_i around their mean; None without the parameter branch) and ``training`` (D2
sizes and rewards per rebuild, steps with each loss term, from the training summary).

Reuse: when ``prev`` is a record of a MetaTuner unit with the same training key (same model, seed, options,
train task and items), its artefacts are loaded instead of training (train once, evaluate on several tasks);
so are this unit's own artefacts left by an earlier attempt.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from promptintern.hashing import content_id
from promptintern.tasks import infra
from promptintern.tokens import counters_for

from .artifacts import weights_sha256
from .measure import (
    exclusive_timing,
    latency_summary,
    measure_settings,
    model_info,
    saturating,
)
from .records import efficiency_summary, eval_record
from .samples import sample_record
from .store import ResultStore
from .unit_common import max_new_tokens, release_hosts, run_meta, set_threads, task_data


def train_key(cfg: dict, options: dict) -> str:
    train_task = cfg.get("train_task") or cfg.get("eval_task")
    return content_id({
        "model": cfg["model"],
        "seed": cfg.get("seed", 0),
        "options": {k: v for k, v in options.items() if k != "progress"},
        "train_task": train_task,
        "train_items": (cfg.get("items") or {}).get("train"),
        "chat": (cfg.get("prompt") or {}).get("chat", True),
    })


def _mean(xs) -> float:
    xs = list(xs)
    return statistics.fmean(xs) if xs else 0.0


def measure(mt, task, examples: list, seed_prompt: str, gen_cfg: dict, max_new_tokens: int) -> dict:
    """eval_unit's ``measurements`` for the whole pipeline (settings from the ``generation`` section, as in
    :func:`promptintern.harness.measure.run_measurements`): throughput at each batch size and batch-1 latency, both counting
    prompt generation and the hypernetwork. A latency sample's ``ttft_s`` / ``e2e_s`` include both phases
    (``compressor_s`` stays 0; the phases are given beside them)."""
    from promptintern.metatuner.infer import measure_pipeline_throughput, run_inference

    st = measure_settings(gen_cfg)
    out: dict = {"settings": st, "pipeline": "prompt generation + hypernetwork + actor"}
    if not st["measure"] or not examples:
        out["skipped"] = "generation.measure is false" if not st["measure"] else "no prompts"
        return out
    with exclusive_timing(st["exclusive_timing"]) as lock:
        out["timing_lock"] = lock
        t0 = time.perf_counter()
        points = measure_pipeline_throughput(mt, task, examples, seed_prompt, st["throughput_batch_sizes"],
                                             st["throughput_max_new_tokens"], repeats=st["throughput_repeats"])
        out["throughput"] = {"max_new_tokens": st["throughput_max_new_tokens"], "points": points,
                             "saturating": saturating(points)}
        n = min(st["latency_samples"], len(examples))
        cap = st["latency_max_new_tokens"]
        lat_max = min(cap, max_new_tokens) if cap else max_new_tokens
        if n:
            runs = []  # every repeat inside the lock, as for eval units
            for rep in range(st["latency_repeats"]):
                again, _ = run_inference(mt, task, examples[:n], seed_prompt, batch_size=1, max_new_tokens=lat_max)
                runs += [(rep, r) for r in again]
            samples = [
                {"id": r.id, "repeat": rep, "ttft_s": r.ttft_s, "e2e_s": r.e2e_s, "compressor_s": 0.0,
                 "prompt_tokens": r.actor.prompt_tokens, "output_tokens": r.actor.output_tokens,
                 "prompt_generation_s": r.prompt_generation_s, "hypernetwork_s": r.hypernetwork_s,
                 "actor_ttft_s": r.actor.ttft_s, "actor_e2e_s": r.actor.e2e_s,
                 "generator_input_tokens": r.generator_input_tokens,
                 "generator_output_tokens": r.generator_output_tokens}
                for rep, r in runs
            ]
            out["latency"] = latency_summary(samples, source="batch1_run")
            out["latency"]["max_new_tokens"] = lat_max
            out["latency"]["repeats"] = st["latency_repeats"]
        out["seconds"] = time.perf_counter() - t0
    return out


def diagnostics(mt, mcfg, task, examples: list, seed_prompt: str, prompts: list[str], train_summary: dict,
                batch_size: int = 8) -> dict:
    """The record's ``diagnostics``: the generated prompts, the per-query LoRAs (θ_i = F(h_i) of the test queries'
    G inputs, computed once more under no_grad) and D2 / the losses from the training summary."""
    import torch

    from promptintern.metatuner.diagnostics import delta_w_spread, prompt_diagnostics, training_diagnostics

    out = {"prompt_branch": mcfg.prompt_branch, "param_branch": mt.F is not None,
           "prompts": prompt_diagnostics(prompts, mt.tok), "delta_w": None,
           "training": training_diagnostics(train_summary)}
    if mt.F is not None and examples:
        g_texts = [mt.g_text(seed_prompt, task.format_query(ex)) for ex in examples]
        parts: dict[str, tuple[list, list]] = {}
        with torch.no_grad():
            for s in range(0, len(g_texts), batch_size):
                for name, (A, B) in mt.factors(g_texts[s : s + batch_size]).items():
                    a, b = parts.setdefault(name, ([], []))
                    a.append(A.detach().float().cpu())
                    b.append(B.detach().float().cpu())
        factors = {name: (torch.cat(a), torch.cat(b)) for name, (a, b) in parts.items()}
        out["delta_w"] = delta_w_spread(factors, scale=mcfg.lora_scale)
    return out


def run_metatuner(unit: dict, store_root: str, prev: dict | None, data_dir: str | None) -> dict:
    """Train (or load) and evaluate one MetaTuner grid point on one eval task; write and return the record."""
    from promptintern.metatuner.config import MetaTunerConfig, method_label, seed_prompt_text
    from promptintern.metatuner.infer import run_inference
    from promptintern.metatuner.train import artefacts_complete, load_metatuner, train_metatuner

    cfg, uid = unit["config"], unit["id"]
    set_threads((unit.get("resources") or {}).get("num_cpus"))
    release_hosts()  # free a base model an earlier eval unit left in this worker
    store = ResultStore(store_root)
    t0 = time.perf_counter()
    method = dict(cfg.get("method") or {"name": "metatuner"})
    options = dict(method.get("options") or {})
    mcfg = MetaTunerConfig.from_dict({**options, "progress": False})
    if method.get("label") in (None, "", "metatuner"):
        method["label"] = method_label(mcfg)
    cfg = {**cfg, "method": method}
    train_name = cfg.get("train_task") or cfg["eval_task"]
    eval_name = cfg.get("eval_task") or train_name
    chat = (cfg.get("prompt") or {}).get("chat", True)
    gen_cfg = cfg.get("generation") or {}
    key = train_key(cfg, options)
    art = store.adapter_dir(uid)

    source: Path | None = None
    prev_mt = (prev or {}).get("metatuner") or {}
    if prev_mt.get("train_key") == key and artefacts_complete(store.root / prev_mt.get("artefact_dir", "")):
        source = store.root / prev_mt["artefact_dir"]
    elif artefacts_complete(art) and json.loads((art / "meta.json").read_text()).get("train_key") == key:
        source = art

    trained = source is None
    if source is not None:
        mt = load_metatuner(source)
        curve = source / "metatuner_curve.json"
        train_summary = json.loads(curve.read_text()) if curve.is_file() else {}
    else:
        train_items = task_data(unit, train_name, data_dir)
        train_task, train = train_items.task, train_items.train
        seed_train = seed_prompt_text(mcfg, train_task.template)
        mt, train_summary = train_metatuner(
            mcfg,
            cfg["model"],
            train_task,
            train,
            seed_train,
            art,
            generator_model=mcfg.generator_model,
            seed=int(cfg.get("seed", 0)),
            chat=chat,
            warmup_root=store.adapters / "metatuner-warmup",
            meta={"train_key": key, "train_task": train_name, "unit_id": uid},
        )
        source = art

    eval_items = task_data(unit, eval_name, data_dir)
    eval_task, test = eval_items.task, eval_items.test
    seed_eval = seed_prompt_text(mcfg, eval_task.template)
    inf, seconds = run_inference(
        mt, eval_task, test, seed_eval,
        batch_size=int(gen_cfg.get("batch_size") or 8),
        max_new_tokens=max_new_tokens(gen_cfg, eval_task),
    )
    scores = infra.score(eval_task, [s.actor.text for s in inf], test)  # infrastructure failures: tasks/infra.py
    max_new = max_new_tokens(gen_cfg, eval_task)
    # always timed here: the engine unit cannot serve a per-query LoRA, so these are MetaTuner's only timings
    measurements = measure(mt, eval_task, test, seed_eval, {**gen_cfg, "measure": True}, max_new)
    tok = mt.tok
    counters = counters_for(tok)
    api_counters = {name: c for name, c in counters.items() if name != "model"}
    samples = []
    for s, ex, sc in zip(inf, test, scores, strict=True):
        rec = sample_record(example_id=s.id, prompt=s.actor_prompt, gen=s.actor, score=sc, reference=ex.reference,
                            counters=counters, tok=tok, chat=chat,
                            # prompt generation + hypernetwork + actor, to the first token and to the end
                            ttft_s=s.ttft_s, e2e_s=s.e2e_s)
        # the actor's rendered input (generated prompt + query + markup) is tokens.model, as for eval units
        rec.update({
            "generated_prompt": s.generated_prompt,
            "generated_prompt_tokens": counters["model"].count(s.generated_prompt) if s.generated_prompt else 0,
            "prompt_generation_s": s.prompt_generation_s,
            "hypernetwork_s": s.hypernetwork_s,
            "actor_ttft_s": s.actor.ttft_s,
            "actor_e2e_s": s.actor.e2e_s,
            "prompt_generation_batch": s.prompt_generation_batch,
            "hypernetwork_batch": s.hypernetwork_batch,
            "generator_prompt": s.generator_user_text,
            "generator_tokens": {
                "model": s.generator_input_tokens,  # G's rendered input (rewrite instruction + p̃ + query)
                "output": s.generator_output_tokens,  # tokens G decoded for p_i
                **{name: c.count(s.generator_user_text) for name, c in api_counters.items()},
                "output_tiktoken": {name: c.count(s.generated_prompt) if s.generated_prompt and mcfg.prompt_branch
                                    else 0 for name, c in api_counters.items()},
            },
        })
        samples.append(rec)
    metrics, infra_block = infra.screen(eval_task, scores, (cfg.get("scoring") or {}).get("max_infra_failures", 0))
    diag = diagnostics(mt, mcfg, eval_task, test, seed_eval, [s.generated_prompt for s in inf], train_summary,
                       batch_size=int(gen_cfg.get("batch_size") or 8))
    total = seconds["total"]
    mean_in = _mean(s["tokens"]["model"] for s in samples)
    mean_out = _mean(s["output_tokens"] for s in samples)
    mean_g_in = _mean(s["generator_tokens"]["model"] for s in samples)
    mean_g_out = _mean(s["generator_tokens"]["output"] for s in samples)
    record = eval_record(
        unit_kind="metatuner", config=cfg, adapter=store.relative(source), adapter_sha256=weights_sha256(source),
        task={"name": eval_task.name, "primary_metric": eval_task.primary_metric, "split": eval_task.test_split},
        metrics=metrics, samples=samples, measurements=measurements, model_info=model_info(mt.M.lm), meta=run_meta(),
        efficiency=efficiency_summary(
            samples, generation_seconds=total,  # all three phases
            batch_size=int(gen_cfg.get("batch_size") or 8), max_new_tokens=max_new,
            actor_generation_seconds=seconds["actor_generation"], prompt_generation_seconds=seconds["prompt_generation"],
            hypernetwork_seconds=seconds["hypernetwork"],
            mean_generated_prompt_tokens=_mean(s["generated_prompt_tokens"] for s in samples),
            mean_generator_input_tokens=mean_g_in, mean_generator_output_tokens=mean_g_out,
            mean_total_input_tokens=mean_in + mean_g_in,  # G reads (p̃, x_i) in every variant
            mean_total_output_tokens=mean_out + mean_g_out),
        extra={
            **({"infra": infra_block} if infra_block else {}),
            "metatuner": {
                "train_key": key,
                "artefact_dir": store.relative(source),
                "trained_here": trained,
                "variant": mcfg.variant,
                "ablation": mcfg.ablation,
                "k": mt.G.k,
                "n_layers": mt.G.n_layers,
                "options": mcfg.to_dict(),
                "seed_prompt": seed_eval,
                "train": train_summary,
            },
            "diagnostics": diag,
        },
        seconds_total=time.perf_counter() - t0)
    store.write(uid, record)
    return record
