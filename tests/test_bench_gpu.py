"""`promptintern bench-gpu` on CPU with the tiny model: the report's ratios are computed from its own figures."""

import json

import pytest


def test_decode_bytes_counts_weights_once_and_the_kv_cache(tiny):
    from promptintern.harness.bench_gpu import decode_bytes

    model, _ = tiny
    cfg = model.config
    weights = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    emb = model.get_input_embeddings().weight
    if model.get_output_embeddings().weight is not emb:
        weights -= emb.numel() * emb.element_size()
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 100 * 4  # fp32 on CPU
    assert decode_bytes(model, 100) == weights + kv


def test_bench_gpu_quick_run_on_cpu(tmp_path, data, monkeypatch):
    from promptintern.harness import bench_gpu

    out = tmp_path / "bench.json"
    report = bench_gpu.main(["--quick", "--model", "tiny", "--compressor", "truncate", "--out", str(out),
                             "--data-dir", str(data)])
    saved = json.loads(out.read_text())
    assert saved["hardware"]["device"] == "cpu" and saved["args"]["model"] == "tiny"
    tr = report["training"]
    assert tr["speedup"] == pytest.approx(tr["ours"]["tokens_per_s"] / tr["plain"]["tokens_per_s"])
    assert tr["ours"]["tokens"] > 0 and tr["plain"]["tokens"] > 0
    dec = report["decode"]
    assert set(dec["engines"]) == {"hf", "static", "fast"}
    for e in dec["engines"].values():
        assert e["x_limit"] == pytest.approx(e["s_per_token"] / dec["limit_s_per_token"])
    p = report["prompts"]["tiny"]["variants"]
    assert p["full"]["mean_prompt_tokens"] > p["compressed"]["mean_prompt_tokens"] > p["query_only"]["mean_prompt_tokens"]
    q = p["query_only"]
    assert q["token_reduction_pct"] == pytest.approx(100 * (1 - q["mean_prompt_tokens"] / p["full"]["mean_prompt_tokens"]))
    assert q["throughput_speedup"] == pytest.approx(q["throughput_tok_s"] / p["full"]["throughput_tok_s"])
    assert all(pt["output_tokens"] == pt["batch_size"] * 8 for pt in q["points"])  # fixed decode length
    rows = bench_gpu.summary_rows(report)
    assert any("training tokens/s" in r[0] for r in rows) and any("query_only vs full" in r[0] for r in rows)


def test_random_shaped_model_has_the_shape(tiny):
    from promptintern.harness.bench_gpu import SHAPES, random_shaped_model

    _, tok = tiny
    SHAPES["test-small"] = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "num_key_value_heads": 2}
    try:
        m = random_shaped_model("test-small", tok, "cpu")
    finally:
        SHAPES.pop("test-small")
    assert m.config.num_hidden_layers == 2 and m.config.vocab_size == len(tok)


def test_grid_ratios_compare_promptintern_with_full_prompt_ft_from_result_files():
    """From the committed benchmark run: every figure recomputed from its main table."""
    from pathlib import Path

    import pandas as pd

    from promptintern.harness.bench_gpu import grid_ratios

    root = Path(__file__).resolve().parent.parent / "results" / "benchmark"
    if not (root / "runs").is_dir():
        pytest.skip("no committed benchmark results")
    table = pd.read_csv(root / "tables" / "main.csv")
    tasks = sorted(set(table.loc[table["eval_task"] == table["train_task"], "eval_task"]))
    assert tasks
    for task in tasks:
        rows = grid_ratios(root, task)
        main = table[(table["eval_task"] == task) & (table["train_task"] == task)]
        full = main[main["method"] == "full_prompt_ft"].iloc[0]
        pi = main[main["method"] == "promptintern"]
        assert [r["label"] for r in rows] == list(pi["label"])
        r, p = rows[0], pi.iloc[0]
        assert r["token_reduction_pct"] == pytest.approx(100 * (1 - p["input_tokens"] / full["input_tokens"]))
        assert r["throughput_speedup"] == pytest.approx(p["throughput_full"], nan_ok=True)
        assert r["latency_speedup"] == pytest.approx(p["speedup_full"], nan_ok=True)
        # pass@1 is stored as a fraction (score_scale 100), BLEU already in points (score_scale 1)
        assert r["score_gap_points"] == pytest.approx(p["score_scale"] * (p["score"] - full["score"]))
