"""`promptintern bench-gpu` / `make bench-gpu`: the speed ratios that matter, measured side by side in one run.

Three measurements on one machine, each against its own baseline run in the same process:

1. **Training**: LoRA fine-tuning tokens/s of the project's trainer (packing, fused AdamW, bf16 autocast on CUDA,
   LM head only on answer tokens) vs a plain HF/PEFT loop (dynamic padding, `model(labels=...)`, foreach AdamW),
   on the same records (real MBPP full prompts + answers, truncated to ``--train-seq``), same LoRA, same batch.
   Tokens/s counts real (non-padding) tokens only.
2. **Decode**: batch-1 time per generated token for each generation engine (hf, static, fast), compared with the
   memory-bandwidth limit: the bytes a decode step must read (weights + KV cache) ÷ the copy bandwidth measured
   here (and ÷ the vendor figure when the accelerator is in ``promptintern/accelerators.yaml``).
3. **Prompts**: full prompt (template + retrieved examples + query) vs compressed template vs query only, in two
   regimes — batch-1 latency (p50 end-to-end) and saturated throughput (output tokens/s at the best batch size
   tried) — on the real model and on a 7B-shaped model with random weights (timing only; GPU only).

Every output row decodes exactly ``--new-tokens`` tokens (``min_new_tokens``), so prompt length is the only
difference between the variants. With ``--results DIR`` it also prints PromptIntern vs full-prompt FT from a
finished grid (token reduction, saturated-throughput speedup, score gap). Figures are printed and written to
JSON; nothing is asserted: the targets are shown beside the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import statistics
import time
from pathlib import Path

from promptintern import tasks
from promptintern.compressors import get_compressor
from promptintern.flops import accelerator_peaks
from promptintern.generation import generate_fixed, static_cache_len, sync_device, warm_up
from promptintern.methods import PromptRule
from promptintern.models import load_model
from promptintern.prompt_builder import PromptBuilder
from promptintern.prompts import encode_for_training, render
from promptintern.retrievers import build_index
from promptintern.trainer import LoraSpec, TrainConfig, attach_adapter, collate, train_stage

from .env_info import describe_hardware, git_commit, hardware, versions
from .measure import measure_throughput
from .store import ResultStore

# A Llama-2-7B-shaped decoder (random weights; timing only).
SHAPES = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32},
}
TARGETS = {"train_speedup": 1.5, "decode_vs_bandwidth": 3.0, "token_reduction_pct": 90.0, "throughput_speedup": 5.0,
           "score_gap_points": 1.0}
QUICK = {"train_batch": 4, "train_seq": 256, "train_steps": 3, "n_prompts": 4, "batch_sizes": [1, 4],
         "new_tokens": 8, "decode_tokens": 16, "engines": ["hf", "static", "fast"], "shapes": []}


# -- 1. training ---------------------------------------------------------------------------------------------

def training_records(tok, task, n: int, seq: int, chat: bool = True) -> list[dict]:
    """Real full-prompt SFT records: the task's template, 2 retrieved examples, query and reference answer."""
    train = task.load(task.train_split)
    test = task.load(task.test_split)
    builder = PromptBuilder(task, train, k=2, retriever=build_index("bm25", train, test, on_overlap="drop"))
    items = [train[i % len(train)] for i in range(n)]
    return [encode_for_training(builder.build(ex, PromptRule(1.0, 2), with_answer=True).prompt, tok, seq, chat)
            for ex in items]


def plain_peft_tokens_per_s(model, tok, records: list[dict], batch: int, lora, warmup_steps: int = 2) -> dict:
    """The baseline: a plain HF/PEFT loop (right padding to the batch's longest row, full-vocabulary loss through
    `model(labels=...)`, torch AdamW with its default foreach kernels, bf16 autocast on CUDA)."""

    import torch
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora.to_peft())
    device = next(peft_model.parameters()).device
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    peft_model.train()
    tokens, seconds = 0, 0.0
    for step, i in enumerate(range(0, len(records), batch)):
        sync_device(device)
        t0 = time.perf_counter()
        ids, labels, mask = collate(records[i : i + batch], pad, device)  # right padding to the longest row
        with autocast:
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync_device(device)
        if step >= warmup_steps:
            seconds += time.perf_counter() - t0
            tokens += int(mask.sum())
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds if seconds else float("nan")}


def ours_tokens_per_s(model, tok, records: list[dict], batch: int, train_cfg: dict, out_dir: Path,
                      warmup_steps: int = 2) -> dict:
    """The project's trainer on the same records (a short untimed run first, so kernel set-up is not counted)."""
    cfg = TrainConfig.from_dict({**train_cfg, "batch_size": batch, "epochs": 1, "progress": False,
                                 "group_by_length": True, "packing": True})
    peft_model = attach_adapter(model, cfg, None)
    train_stage(peft_model, tok, records[: warmup_steps * batch], cfg, out_dir / "warmup", desc="warm-up")
    res = train_stage(peft_model, tok, records[warmup_steps * batch :], cfg, out_dir / "timed", desc="timed")
    out = {"tokens": res.train_tokens, "seconds": res.seconds, "tokens_per_s": res.tokens_per_second}
    return {**out, "mfu": res.mfu, "model_flops": res.model_flops, "padded_tokens": res.padded_tokens}


def bench_training(model_name: str, task, *, batch: int, seq: int, steps: int, rank: int, out_dir: Path) -> dict:
    warm = 2
    model, tok = load_model(model_name)
    records = training_records(tok, task, batch * (steps + warm), seq)
    lora = LoraSpec(r=rank, alpha=2 * rank, dropout=0.0, target_modules="all-linear")
    plain = plain_peft_tokens_per_s(model, tok, records, batch, lora, warmup_steps=warm)
    del model
    _free()
    model, tok = load_model(model_name)
    ours = ours_tokens_per_s(model, tok, records, batch,
                             {"lr": 1e-4, "max_length": seq, "lora": {"r": rank, "alpha": 2 * rank, "dropout": 0.0,
                                                                      "target_modules": "all-linear"}},
                             out_dir, warmup_steps=warm)
    del model
    _free()
    real = [len(r["input_ids"]) for r in records]
    return {"batch": batch, "max_seq": seq, "steps_timed": steps, "lora_r": rank, "mean_row_tokens": statistics.fmean(real),
            "plain": plain, "ours": ours, "speedup": ours["tokens_per_s"] / plain["tokens_per_s"]}


# -- 2. decode vs the bandwidth limit --------------------------------------------------------------------------

def copy_bandwidth(device, nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Measured bytes/s of a device-to-device copy (each copy reads and writes ``nbytes``)."""
    import torch

    n = nbytes // 2
    x = torch.empty(n, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    sync_device(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    sync_device(device)
    return 2 * nbytes * reps / (time.perf_counter() - t0)


def decode_bytes(model, context: int) -> int:
    """Bytes one decode step reads: every weight matrix once (the input embedding only as the tied LM head, its
    lookup reads one row) plus the KV cache of ``context`` positions."""
    cfg = model.config
    params = {id(p): p for p in model.parameters()}
    weight_bytes = sum(p.numel() * p.element_size() for p in params.values())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    if out is None or out.weight is not emb:  # untied: the embedding table is not read in full
        weight_bytes -= emb.numel() * emb.element_size()
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = 2 * cfg.num_hidden_layers * kv_heads * head_dim * context * emb.element_size()
    return int(weight_bytes + kv)


def _timed_generate(model, tok, ids: list[list[int]], new_tokens: int, engine: str) -> float:
    """Seconds for one batch decoding exactly ``new_tokens`` tokens per row with ``engine`` (warmed up)."""
    device = next(model.parameters()).device
    cache_len = static_cache_len([len(x) for x in ids], max(new_tokens, 4))
    warm_up(model, tok, ids, engine, cache_len)
    batch = tok.pad({"input_ids": ids}, return_tensors="pt").to(device)
    sync_device(device)
    t0 = time.perf_counter()
    generate_fixed(model, tok, batch, new_tokens, engine, cache_len)
    sync_device(device)
    return time.perf_counter() - t0


def bench_decode(model, tok, *, engines: list[str], new_tokens: int, bandwidth: float, spec_bandwidth: float | None,
                 prompt: str = "Write a Python function that returns the n-th Fibonacci number.") -> dict:
    """Batch-1 seconds per decoded token = (time for N tokens − time for 1 token) / (N − 1), per engine."""
    ids = [tok(prompt, add_special_tokens=False)["input_ids"]]
    context = len(ids[0]) + new_tokens // 2  # mean context over the decode
    limit_s = decode_bytes(model, context) / bandwidth
    out = {"new_tokens": new_tokens, "bytes_per_step": decode_bytes(model, context), "bandwidth_B_per_s": bandwidth,
           "limit_s_per_token": limit_s, "engines": {}}
    if spec_bandwidth:
        out["spec_bandwidth_B_per_s"] = spec_bandwidth
        out["spec_limit_s_per_token"] = decode_bytes(model, context) / spec_bandwidth
    for engine in engines:
        _timed_generate(model, tok, ids, new_tokens, engine)  # warm caches and allocator at this length
        one = min(_timed_generate(model, tok, ids, 1, engine) for _ in range(3))
        full = min(_timed_generate(model, tok, ids, new_tokens, engine) for _ in range(3))
        per = (full - one) / (new_tokens - 1)
        out["engines"][engine] = {"s_per_token": per, "x_limit": per / limit_s}
    return out


# -- 3. full vs compressed vs query-only prompts ---------------------------------------------------------------

def prompt_variants(tok, task, n: int, rate: float, compressor) -> dict[str, list[str]]:
    """Rendered prompts of the first ``n`` test queries: full (template + 2 examples), compressed template at
    ``rate`` (no examples: PromptIntern's last stage keeps none), and query only."""
    train, test = task.load(task.train_split), task.load(task.test_split)[:n]
    builder = PromptBuilder(task, train, k=2, retriever=build_index("bm25", train, test, on_overlap="drop"),
                            compressor=compressor)
    rules = {"full": PromptRule(1.0, 2), "compressed": PromptRule(rate, 0), "query_only": PromptRule(0.0, 0)}
    return {name: [render(builder.build(ex, rule, with_answer=False).prompt, tok) for ex in test]
            for name, rule in rules.items()}


def bench_prompts(model, tok, variants: dict[str, list[str]], *, batch_sizes: list[int], new_tokens: int,
                  engine: str) -> dict:
    """Per variant: mean prompt tokens, batch-1 p50 latency and the saturated throughput; ratios vs full."""
    out: dict = {"engine": engine, "new_tokens": new_tokens, "variants": {}}
    for name, prompts in variants.items():
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        lat = [_timed_generate(model, tok, [x], new_tokens, engine) for x in ids]
        tp = measure_throughput(model, tok, prompts, batch_sizes, new_tokens, engine=engine)
        out["variants"][name] = {
            "mean_prompt_tokens": statistics.fmean(len(x) for x in ids),
            "latency_p50_s": statistics.median(lat),
            "throughput_tok_s": tp["saturating"]["tokens_per_s"],
            "throughput_batch_size": tp["saturating"]["batch_size"],
            "saturated": tp["saturating"]["saturated"],
            "points": tp["points"],
        }
    full = out["variants"]["full"]
    for v in out["variants"].values():
        v["token_reduction_pct"] = 100.0 * (1 - v["mean_prompt_tokens"] / full["mean_prompt_tokens"])
        v["latency_speedup"] = full["latency_p50_s"] / v["latency_p50_s"]
        v["throughput_speedup"] = v["throughput_tok_s"] / full["throughput_tok_s"]
    return out


def random_shaped_model(shape: str, tok, device: str):
    """A llama decoder with the named shape and random weights (bf16 on CUDA): for timing only."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], vocab_size=len(tok), max_position_embeddings=4096,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval()


# -- 4. from a finished grid -------------------------------------------------------------------------------------

def grid_ratios(results_dir: str | Path, task: str = "mbpp") -> list[dict]:
    """PromptIntern rows vs full-prompt FT on ``task`` from a results folder: token reduction, saturated-throughput
    speedup, latency speedup, score gap (points)."""
    from . import aggregate

    df = aggregate.eval_frame(ResultStore(results_dir))
    if df.empty:
        return []
    main = aggregate.main_table(df)
    main = main[(main["eval_task"] == task) & (main["train_task"] == task)]
    full = main[main["method"] == aggregate.BASELINE_METHOD]
    if full.empty:
        return []
    f = full.iloc[0]
    rows = []
    for _, r in main[main["method"].str.startswith("promptintern")].iterrows():
        rows.append({"label": r.get("label", r["method"]), "model": r["model"],
                     "token_reduction_pct": r["token_reduction_full_pct"],
                     "throughput_speedup": r["throughput_full"], "latency_speedup": r["speedup_full"],
                     "score_gap_points": aggregate.display_score(r["metric"], r["score"])
                     - aggregate.display_score(f["metric"], f["score"])})
    return rows


# -- driver ------------------------------------------------------------------------------------------------------

def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(args) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    task = tasks.get_task(args.task, data_dir=args.data_dir)
    out_dir = Path(args.out).parent / "bench_gpu_work"
    report: dict = {"hardware": hardware(), "versions": versions(), "git_commit": git_commit(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if not args.skip_training:
        report["training"] = bench_training(args.model, task, batch=args.train_batch, seq=args.train_seq,
                                            steps=args.train_steps, rank=args.lora_r, out_dir=out_dir)
    peaks = accelerator_peaks(torch.device(device))
    spec = float(peaks["memory_tb_s"]) * 1e12 if peaks and peaks.get("memory_tb_s") else None
    report["accelerator_spec"] = peaks
    bandwidth = copy_bandwidth(torch.device(device), nbytes=(1 << 30) if device == "cuda" else (1 << 27))
    model, tok = load_model(args.model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    report["decode"] = bench_decode(model, tok, engines=args.engines, new_tokens=args.decode_tokens,
                                    bandwidth=bandwidth, spec_bandwidth=spec)
    compressor = get_compressor(args.compressor, **({"model": args.model} if args.compressor == "perplexity" else
                                                    {"tokenizer": args.model}))
    variants = prompt_variants(tok, task, args.n_prompts, args.rate, compressor)
    best = min(report["decode"]["engines"].items(), key=lambda kv: kv[1]["s_per_token"])[0]
    engine = args.prompt_engine or best
    report["prompts"] = {args.model: {"label": f"{args.model} (real weights)", **bench_prompts(
        model, tok, variants, batch_sizes=args.batch_sizes, new_tokens=args.new_tokens, engine=engine)}}
    del model
    _free()
    for shape in args.shapes:
        if device != "cuda":
            report["prompts"][shape] = {"skipped": f"the {shape}-shaped model is timed on a GPU only"}
            continue
        big = random_shaped_model(shape, tok, device)
        report["prompts"][shape] = {"label": f"{shape}-shaped llama, random weights (timing only)", **bench_prompts(
            big, tok, variants, batch_sizes=args.batch_sizes, new_tokens=args.new_tokens, engine=engine)}
        del big
        _free()
    if args.results:
        report["grid"] = {"results": str(args.results), "rows": grid_ratios(args.results, args.task)}
    report["seconds"] = time.perf_counter() - args._t0
    return report


def summary_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, met) rows for the console."""
    def x(v):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}×"

    rows = []
    tr = report.get("training")
    if tr:
        rows.append(("training tokens/s, ours vs plain HF/PEFT",
                     f"{tr['ours']['tokens_per_s']:,.0f} vs {tr['plain']['tokens_per_s']:,.0f} = {x(tr['speedup'])}",
                     f"≥ {TARGETS['train_speedup']}×", _met(tr["speedup"] >= TARGETS["train_speedup"])))
        if tr["ours"].get("mfu") is not None:
            rows.append(("training MFU (ours)", f"{100 * tr['ours']['mfu']:.1f} %", "", ""))
    dec = report["decode"]
    for engine, e in dec["engines"].items():
        rows.append((f"batch-1 decode, {engine} engine: s/token vs bandwidth limit",
                     f"{1e3 * e['s_per_token']:.3f} ms vs {1e3 * dec['limit_s_per_token']:.3f} ms = {x(e['x_limit'])}",
                     f"≤ {TARGETS['decode_vs_bandwidth']}×", _met(e["x_limit"] <= TARGETS["decode_vs_bandwidth"])))
    for key, p in report["prompts"].items():
        if "skipped" in p:
            rows.append((f"prompts on {key}", p["skipped"], "", ""))
            continue
        for name in ("compressed", "query_only"):
            v = p["variants"][name]
            rows.append((f"{p['label']}: {name} vs full — input tokens", f"-{v['token_reduction_pct']:.1f} %", "", ""))
            rows.append((f"{p['label']}: {name} vs full — batch-1 latency", x(v["latency_speedup"]), "", ""))
            rows.append((f"{p['label']}: {name} vs full — saturated throughput", x(v["throughput_speedup"]),
                         f"≥ {TARGETS['throughput_speedup']}×" if name == "query_only" else "",
                         _met(v["throughput_speedup"] >= TARGETS["throughput_speedup"]) if name == "query_only" else ""))
    for r in (report.get("grid") or {}).get("rows", []):
        rows.append((f"grid {r['label']}: input tokens vs full-prompt FT", f"-{r['token_reduction_pct']:.1f} %",
                     f"≥ {TARGETS['token_reduction_pct']:.0f} %",
                     _met(r["token_reduction_pct"] >= TARGETS["token_reduction_pct"])))
        rows.append((f"grid {r['label']}: saturated throughput vs full-prompt FT", x(r["throughput_speedup"]),
                     f"≥ {TARGETS['throughput_speedup']}×", _met(r["throughput_speedup"] >= TARGETS["throughput_speedup"])))
        rows.append((f"grid {r['label']}: score − full-prompt FT (points)", f"{r['score_gap_points']:+.1f}",
                     f"≥ -{TARGETS['score_gap_points']}", _met(r["score_gap_points"] >= -TARGETS["score_gap_points"])))
    return rows


def _met(ok) -> str:
    return "yes" if bool(ok) else "NO"


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench-gpu on {describe_hardware(report['hardware'])}")
    for col in ("figure", "measured", "target", "met"):
        table.add_column(col)
    for row in summary_rows(report):
        table.add_row(*row)
    Console().print(table)


def parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="promptintern bench-gpu", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="mbpp")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="JSON path (default results/bench_gpu/<device>.json)")
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--train-seq", type=int, default=512)
    p.add_argument("--train-steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--engines", nargs="+", default=["hf", "static", "fast"])
    p.add_argument("--prompt-engine", default=None, help="engine for the prompt comparison (default: fastest decode)")
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--n-prompts", type=int, default=32)
    p.add_argument("--rate", type=float, default=0.3, help="template keep rate of the compressed variant")
    p.add_argument("--compressor", default="perplexity")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--shapes", nargs="*", default=["7b"], help=f"random-weight shapes to time: {', '.join(SHAPES)}")
    p.add_argument("--results", default=None, help="a finished grid's results folder: PromptIntern vs full-prompt FT")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU smoke run")
    return p


def main(argv: list[str] | None = None, args=None) -> dict:
    args = args or parser().parse_args(argv)
    args._t0 = time.perf_counter()
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if not args.out:
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        args.out = str(Path("results") / "bench_gpu" / (name.replace(" ", "_") + ".json"))
    report = run(args)
    report["args"] = {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(out)
    print_summary(report)
    print(f"written: {out}")
    return report


if __name__ == "__main__":
    main()
