"""Packing keeps the optimisation identical while computing less padding; model FLOPs and MFU arithmetic."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from promptintern import flops
from promptintern.prompts import Prompt, encode_for_training
from promptintern.trainer import (
    TrainConfig,
    attach_adapter,
    collate,
    collate_packed,
    completion_loss,
    pack,
    pack_rows,
    train_stage,
)


@pytest.fixture()
def fresh_tiny():
    from promptintern.models import load_model

    return load_model("tiny", device="cpu")


def _records(tok, sizes=(1, 7, 3, 12, 2, 5)):
    """Records of clearly different lengths (the template repeats k times)."""
    out = []
    for k in sizes:
        xs = list(range(k))
        p = Prompt(template="Answer with the list reversed. " * k, query=f"Reverse {xs}", answer=str(xs[::-1]))
        out.append(encode_for_training(p, tok, 512))
    return out


# -- packing -----------------------------------------------------------------------------------------------------

def test_first_fit_decreasing_places_every_item_once_within_capacity():
    lengths = [7, 3, 9, 2, 5, 5, 1, 8]
    rows = pack(lengths, 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 4  # total 40 over capacity 10: FFD finds [9, 1] [8, 2] [7, 3] [5, 5]
    assert pack([12, 3], 10) == [[0], [1]]  # an item longer than the capacity gets a row of its own


def test_pack_rows_never_computes_more_than_the_padded_layout():
    # Fewest rows is not least work: FFD at capacity 256 gives [130] [129, 127] [128], 3 x 256 > 4 x 130.
    lengths = [130, 129, 128, 127]
    assert len(pack(lengths, 256)) == 3
    rows = pack_rows(lengths, 256)
    assert len(rows) * max(sum(lengths[i] for i in r) for r in rows) <= 4 * 130
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 16))]
        bound = rng.choice([64, 256, 1024])
        for break_even in (None, 500.0):
            rows = pack_rows(lengths, bound, break_even)
            assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
            width = max(sum(lengths[i] for i in r) for r in rows)
            assert width <= max(bound, *lengths)
            assert len(rows) * width <= len(lengths) * max(lengths)
    # Short records, a wide bound: one row when positions alone count; narrower rows when the whole-row
    # attention of an explicit mask is weighed in.
    lengths = [300] + [100] * 7  # padded: 8 x 300 positions; one row: 1000; rows of 300: 4 x 300
    rows = pack_rows(lengths, 1024)
    assert len(rows) * max(sum(lengths[i] for i in r) for r in rows) == 1000  # no padding at all
    assert len(pack_rows(lengths, 1024, attn_break_even=100.0)) == 4


def test_packed_rows_restart_positions_and_mask_the_first_token_of_each_record(tiny):
    _, tok = tiny
    recs = _records(tok)
    lengths = [len(r["input_ids"]) for r in recs]
    ids, labels, pos = collate_packed(recs, tok.pad_token_id, "cpu", max_length=64)
    assert ids.shape[0] < len(recs) and ids.shape[1] <= max(64, *lengths)  # capacity at most max(64, longest)
    for k in range(ids.shape[0]):
        for s in (pos[k] == 0).nonzero().flatten().tolist():
            assert labels[k, s] == -100  # nothing predicted across a record boundary
    # Every record appears intact in some row, with positions 0..n-1.
    flat = [(ids[k].tolist(), pos[k].tolist()) for k in range(ids.shape[0])]
    for r in recs:
        n = len(r["input_ids"])
        assert any(
            any(row[s : s + n] == r["input_ids"] and p[s : s + n] == list(range(n)) for s in range(len(row) - n + 1))
            for row, p in flat
        )
    # Same target tokens as the padded layout.
    _, p_labels, _ = collate(recs, tok.pad_token_id, "cpu")
    assert int((labels != -100).sum()) == int((p_labels[:, 1:] != -100).sum())


def _lora_model(fresh_tiny):
    model, tok = fresh_tiny
    cfg = TrainConfig.from_dict({"lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "seed": 3})
    peft = attach_adapter(model, cfg, None)
    torch.manual_seed(0)
    with torch.no_grad():  # move B away from 0 so the adapter matters in the forward pass as well
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    peft.eval()  # no dropout anywhere
    return peft, tok


def _loss_and_grads(model, *args, **kwargs):
    model.zero_grad(set_to_none=True)
    loss = completion_loss(model, *args, **kwargs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_packed_loss_and_gradients_equal_the_padded_ones(fresh_tiny):
    model, tok = _lora_model(fresh_tiny)
    recs = _records(tok)
    ids, labels, mask = collate(recs, tok.pad_token_id, "cpu")
    p_ids, p_labels, pos = collate_packed(recs, tok.pad_token_id, "cpu", max_length=64)
    assert (p_ids == tok.pad_token_id).any() or p_ids.shape[0] == 1  # some packed row is padded here
    loss, grads = _loss_and_grads(model, ids, mask, labels)
    p_loss, p_grads = _loss_and_grads(model, p_ids, None, p_labels, position_ids=pos)
    assert abs(loss.item() - p_loss.item()) < 1e-5, (loss, p_loss)
    assert grads.keys() == p_grads.keys() and grads
    for n in grads:
        assert torch.allclose(grads[n], p_grads[n], atol=1e-5, rtol=1e-4), n
    # The plain path (models with logit soft-capping) takes the packed layout as well.
    with torch.no_grad():
        plain = model(input_ids=p_ids, position_ids=pos, labels=p_labels, use_cache=False).loss
    assert abs(plain.item() - loss.item()) < 1e-5
    # Fewer positions computed, the same real tokens.
    assert p_ids.numel() < ids.numel()
    assert int(mask.sum()) == sum(len(r["input_ids"]) for r in recs)


def test_pad_tokens_never_affect_real_tokens(fresh_tiny):
    """A packed row with a pad tail gives the same hidden states on its real tokens as without the tail."""
    model, tok = fresh_tiny
    recs = _records(tok, sizes=(4, 2))
    ids, _, pos = collate_packed(recs, tok.pad_token_id, "cpu", max_length=10_000)  # one row, no padding
    n = ids.shape[1]
    tail = torch.full((1, 5), tok.pad_token_id)
    padded_ids = torch.cat([ids, tail], 1)
    padded_pos = torch.cat([pos, torch.arange(5)[None]], 1)
    with torch.no_grad():
        h = model.model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
        hp = model.model(input_ids=padded_ids, position_ids=padded_pos, use_cache=False).last_hidden_state
    assert torch.allclose(h, hp[:, :n], atol=1e-5)


def _run(tmp_path, name, packing, seed=5, checkpointing=False, dropout=0.0):
    from promptintern.models import load_model

    model, tok = load_model("tiny", device="cpu")
    cfg = TrainConfig.from_dict({"lr": 1e-2, "epochs": 2, "batch_size": 4, "progress": False, "warmup_ratio": 0.0,
                                 "seed": seed, "packing": packing, "max_length": 256,
                                 "precision": "fp32",  # packing's equivalence, free of bf16 rounding
                                 "gradient_checkpointing": checkpointing,
                                 "lora": {"r": 4, "alpha": 8, "dropout": dropout}})
    recs = _records(tok, sizes=(1, 9, 3, 14, 2, 6, 11, 4))
    result = train_stage(attach_adapter(model, cfg, None), tok, recs, cfg, tmp_path / name)
    return result, json.loads((tmp_path / name / "loss_curve.json").read_text())


def test_packed_training_is_deterministic_and_matches_unpacked(tmp_path):
    a, curve = _run(tmp_path, "a", packing=True)
    b, _ = _run(tmp_path, "b", packing=True)
    assert a.losses == b.losses and a.steps == 4
    u, u_curve = _run(tmp_path, "u", packing=False)
    # Same batches, same loss: the optimisation is the same up to float rounding.
    assert a.losses == pytest.approx(u.losses, rel=1e-4)
    assert a.train_tokens == u.train_tokens and a.target_tokens == u.target_tokens
    assert a.padded_tokens < u.padded_tokens and u.padded_tokens >= u.train_tokens
    assert curve["packing"] is True and u_curve["packing"] is False
    for key in ("padded_tokens", "model_flops", "mfu"):
        assert key in curve
    assert curve["model_flops"] == pytest.approx(u_curve["model_flops"])  # model FLOPs exclude padding
    assert a.model_flops > 0 and a.mfu is None  # CPU: no published peak, no MFU
    assert curve["flops_inputs"]["accelerator"] is None


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gradient_checkpointing_recomputes_without_changing_the_optimisation(tmp_path, dropout):
    """The recomputed forward draws the same dropout masks (RNG state kept), so the adapter is the same: why
    ``train.gradient_checkpointing`` is an execution setting, not part of a unit's id (promptintern.harness.plan)."""
    plain, _ = _run(tmp_path, "plain", packing=True, dropout=dropout)
    ckpt, _ = _run(tmp_path, "ckpt", packing=True, checkpointing=True, dropout=dropout)
    assert ckpt.losses == pytest.approx(plain.losses, rel=1e-5)
    a = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    b = load_file(tmp_path / "ckpt" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("checkpointing, calls", [(False, 2), (True, 4)])
def test_gradient_checkpointing_runs_each_layer_again_in_backward(tmp_path, monkeypatch, checkpointing, calls):
    """One step of the 2-layer tiny model: each MLP runs once forward, and once more in backward when its
    activations were not kept. (Counted in forward itself: module hooks do not fire during the recompute.)"""
    from transformers.models.llama import modeling_llama

    from promptintern.models import load_model

    model, tok = load_model("tiny", device="cpu")
    assert model.config.num_hidden_layers == 2
    cfg = TrainConfig.from_dict({"batch_size": 8, "progress": False, "gradient_checkpointing": checkpointing,
                                 "lora": {"r": 4, "alpha": 8, "dropout": 0.0}})
    peft_model = attach_adapter(model, cfg, None)
    seen = []
    forward = modeling_llama.LlamaMLP.forward
    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", lambda self, x: seen.append(1) or forward(self, x))
    train_stage(peft_model, tok, _records(tok, sizes=(3, 5)), cfg, tmp_path / "one")  # one step
    assert len(seen) == calls


def test_train_config_accepts_the_harness_defaults():
    from promptintern.harness.config import DEFAULTS

    cfg = TrainConfig.from_dict(DEFAULTS["train"])
    assert cfg.packing is False
    assert TrainConfig.from_dict({"packing": True}).packing is True


# -- model FLOPs -------------------------------------------------------------------------------------------------

def _llama_config(**kw):
    from transformers import LlamaConfig

    return LlamaConfig(**kw)


def test_training_flops_by_hand():
    cfg = _llama_config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=1000)
    d, L, H, K, ff, V = 64, 2, 4, 2, 128, 1000  # hidden, layers, heads, kv heads, intermediate, vocab
    h = d // H  # head dim 16
    A = H * h  # attention width 64
    # q (d x A) + k, v (d x K*h each) + o (A x d) + gate, up, down (d x ff each), per layer
    per_layer = d * A + 2 * d * K * h + A * d + 3 * d * ff
    assert per_layer == 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128 == 4096 + 4096 + 4096 + 24576 == 36864
    N = L * per_layer  # 73,728
    assert flops.DecoderDims.from_config(cfg).matmul_params == N == 73_728

    T, Ty, s, P = 1000, 100, 50.0, 2000
    fwd = 2 * N + 2 * L * s * A  # 147,456 + 12,800 (causal: s/2 keys per query, 4A FLOPs per pair)
    bwd = 2 * N + 2 * (2 * L * s * A)  # activation grads of frozen weights; two grads per attention product
    lora = 6 * P  # 12,000
    head = 2 * d * V + 2 * d * V  # per target token: 256,000
    expected = T * (fwd + bwd + lora) + Ty * head
    assert fwd + bwd + lora == 294_912 + 38_400 + 12_000 == 345_312
    assert expected == 345_312_000 + 25_600_000 == 370_912_000
    assert flops.training_flops(cfg, P, T, Ty, s) == pytest.approx(expected, rel=1e-12)

    # 200 of the 1000 tokens forward only (a frozen teacher): no backward, no LoRA, no head for them.
    expected_f = 800 * (fwd + bwd + lora) + 200 * fwd + Ty * head
    assert flops.training_flops(cfg, P, T, Ty, s, forward_only_tokens=200) == pytest.approx(expected_f, rel=1e-12)


def test_flops_dimensions_of_the_tiny_model_and_smollm2(tiny):
    model, _ = tiny
    dims = flops.DecoderDims.from_config(model.config)
    assert (dims.hidden, dims.layers, dims.heads, dims.kv_heads, dims.head_dim, dims.intermediate) == (64, 2, 4, 2, 16, 128)
    # SmolLM2-135M's shape (no download): the non-embedding matmul weights plus the tied embedding come to the
    # model's ~134.5M parameters, less the norms.
    smol = _llama_config(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    n = flops.DecoderDims.from_config(smol).matmul_params
    assert n == 30 * (576 * 576 + 2 * 576 * 192 + 576 * 576 + 3 * 576 * 1536) == 106_168_320
    norms = (2 * 30 + 1) * 576
    assert n + 49152 * 576 + norms == 134_515_008


def test_attended_length_is_the_token_weighted_mean():
    assert flops.attended_length([10, 10]) == 10
    assert flops.attended_length([1, 3]) == pytest.approx((1 + 9) / 4)
    assert flops.attended_length([]) == 0.0


# -- accelerator peaks and MFU -----------------------------------------------------------------------------------

def test_accelerator_lookup():
    h100 = flops.accelerator_peaks("NVIDIA H100 80GB HBM3")
    assert h100["name"] == "NVIDIA H100 SXM5" and h100["bf16_tflops"] == 989 and h100["memory_tb_s"] == 3.35
    assert flops.accelerator_peaks("NVIDIA H100 PCIe")["name"] == "NVIDIA H100 PCIe"
    assert flops.accelerator_peaks("NVIDIA H100 NVL")["name"] == "NVIDIA H100 NVL"
    assert flops.accelerator_peaks("NVIDIA H200")["name"] == "NVIDIA H200 SXM"
    assert flops.accelerator_peaks("NVIDIA A100-SXM4-80GB")["memory_tb_s"] == 2.039
    assert flops.accelerator_peaks("NVIDIA A100-PCIE-40GB")["name"] == "NVIDIA A100 40GB"
    assert flops.accelerator_peaks("NVIDIA A10G")["name"] == "NVIDIA A10G"
    assert flops.accelerator_peaks("NVIDIA A10")["name"] == "NVIDIA A10"
    assert flops.accelerator_peaks("NVIDIA L4")["name"] == "NVIDIA L4"
    for unknown in ("NVIDIA GeForce RTX 9999", "NVIDIA L40S", "NVIDIA GH200 480GB", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"):
        assert flops.accelerator_peaks(unknown) is None, unknown
    assert flops.accelerator_peaks("cpu") is None
    assert flops.accelerator_peaks(torch.device("cpu")) is None


def test_accelerator_file_entries_are_sourced():
    entries = flops.load_accelerators()
    assert len(entries) >= 6
    for e in entries:
        assert str(e["source"]).startswith("https://") and len(str(e["retrieved"])) == 10
        assert e["bf16_tflops"] > 0 and e["memory_tb_s"] > 0 and isinstance(e["vendor_spec"], bool)


def test_mfu_arithmetic():
    peaks = {"bf16_tflops": 100}
    assert flops.mfu(50e12, 2.0, peaks) == pytest.approx(0.25)
    assert flops.mfu(50e12, 2.0, None) is None
    assert flops.mfu(None, 2.0, peaks) is None


def test_baking_stage_reports_flops_without_padding_count(fresh_tiny, tmp_path):
    """train_loop's other objective: no padded_tokens reported, teacher tokens counted as forward-only."""
    from promptintern.baking import pair_record, train_bake_stage

    model, tok = fresh_tiny
    cfg = TrainConfig.from_dict({"epochs": 1, "batch_size": 2, "progress": False, "lora": {"r": 4, "dropout": 0.0}})
    rng = random.Random(0)
    recs = []
    for _ in range(4):
        xs = [rng.randint(0, 9) for _ in range(3)]
        full = Prompt(template="Reverse the list. " * 3, query=f"Reverse {xs}", answer=str(xs[::-1]))
        recs.append(pair_record(full, Prompt(query=full.query, answer=full.answer), tok, 256))
    r = train_bake_stage(attach_adapter(model, cfg, None), tok, recs, cfg, tmp_path / "bake")
    curve = json.loads((tmp_path / "bake" / "loss_curve.json").read_text())
    assert r.padded_tokens is None and r.mfu is None and r.model_flops > 0
    assert curve["flops_inputs"]["forward_only_tokens"] == curve["teacher_tokens"] > 0


# -- training table ----------------------------------------------------------------------------------------------

def test_stage_table_shows_mfu_and_padding_and_reads_old_records(tmp_path):
    from _results_factory import PI, stage_record

    from promptintern.harness import aggregate as agg
    from promptintern.harness import tables as T
    from promptintern.harness.store import ResultStore

    store = ResultStore(tmp_path / "exp")
    new = stage_record(store, "s-new", method=PI, train_task="mbpp", stage=0, n_stages=2, losses=[3.0, 2.0],
                       seconds=10.0, template_rate=0.5, mean_prompt_tokens=100.0)
    new["train"].update({"padded_tokens": 1250, "model_flops": 4.2e15, "mfu": 0.4237})  # 1000 real of 1250
    old = stage_record(store, "s-old", method=PI, train_task="mbpp", stage=1, n_stages=2, losses=[2.0, 1.0],
                       seconds=10.0, template_rate=0.0, mean_prompt_tokens=50.0)  # written before these fields
    store.write("s-new", new)
    store.write("s-old", old)
    sf = agg.stage_frame(store)
    table = agg.stage_table(sf)
    first, second = table.sort_values("stage").to_dict("records")
    assert first["mfu"] == pytest.approx(0.4237) and first["padding_share"] == pytest.approx(0.2)
    assert second["mfu"] != second["mfu"] and second["padding_share"] != second["padding_share"]  # NaN
    md = T.render_markdown(table, T.stage_columns())
    header = md.splitlines()[0]
    assert header.rstrip(" |").endswith("| tokens/s | MFU | padding")
    assert "| 100 | 42.4% | 20.0% |" in md  # 1000 tokens / 10 s; MFU; padding share
    assert "| 100 | – | – |" in md
