"""A training-stage unit: build the stage's prompts, train from the previous adapter, save adapter + record."""

from __future__ import annotations

import statistics
import time

from .store import ResultStore
from .unit_common import prompt_builder, run_meta, set_threads, task_data


def run_stage(unit: dict, store_root: str, prev_adapter: str | None, data_dir: str | None) -> dict:
    """Train one stage from the previous stage's adapter; save the adapter and the record."""
    from promptintern.methods import PromptRule
    from promptintern.models import load_model
    from promptintern.prompts import encode_for_training, render
    from promptintern.trainer import TrainConfig, attach_adapter, train_stage

    cfg, uid = unit["config"], unit["id"]
    set_threads(unit["resources"].get("num_cpus"))
    store = ResultStore(store_root)
    t0 = time.perf_counter()
    task, train, test = task_data(cfg, cfg["train_task"], data_dir)
    items = train[: cfg["train_limit"]] if cfg["train_limit"] else train
    builder = prompt_builder(cfg, task, train, test)
    rule = PromptRule(**cfg["rule"])
    built = [builder.build(ex, rule, with_answer=True) for ex in items]
    model, tok = load_model(cfg["model"])
    chat = cfg["prompt"]["chat"]
    tcfg = TrainConfig.from_dict({**cfg["train"], "seed": cfg["seed"] + cfg["stage"], "progress": False})
    records = [encode_for_training(b.prompt, tok, tcfg.max_length, chat) for b in built]
    peft_model = attach_adapter(model, tcfg, prev_adapter)
    out_dir = store.adapter_dir(uid)
    result = train_stage(peft_model, tok, records, tcfg, out_dir, desc=uid)
    prompt_tokens = [len(tok(render(b.prompt, tok, chat), add_special_tokens=False)["input_ids"]) for b in built]
    achieved = [b.template_rate_achieved for b in built if b.template_rate_achieved is not None]
    record = {
        "kind": "stage",
        "status": "ok",
        "config": cfg,
        "adapter_dir": str(out_dir.relative_to(store.root)),
        "init_adapter": prev_adapter,
        "train": {
            **result.to_dict(),
            "adapter_dir": str(out_dir.relative_to(store.root)),
            "n_examples": len(items),
            "mean_prompt_tokens": statistics.fmean(prompt_tokens) if prompt_tokens else 0.0,
            "template_rate_requested": rule.template_rate,
            "template_rate_achieved": achieved[0] if achieved else None,
            "examples_per_prompt": rule.n_examples,
        },
        "seconds_total": time.perf_counter() - t0,
        **run_meta(),
    }
    store.write(uid, record)
    return record
