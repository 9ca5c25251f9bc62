import json

import pytest
import torch

from promptintern.prompts import Prompt, encode_for_training, part_token_counts, render
from promptintern.tokens import HFTokenCounter
from promptintern.trainer import TrainConfig, attach_adapter, batches, train_stage


def _prompts(n=12, template="Answer with the list reversed. " * 5, examples=("Example: [1, 2] -> [2, 1]",)):
    out = []
    for i in range(n):
        xs = [i, i + 1, i + 2]
        out.append(Prompt(template=template, examples=examples, query=f"Reverse {xs}", answer=str(xs[::-1])))
    return out


def test_user_text_layout_and_part_counts(tiny):
    _, tok = tiny
    p = _prompts(1)[0]
    text = p.user_text()
    assert text.startswith("Answer with the list reversed.")
    assert "### Examples" in text and text.rstrip().endswith("Reverse [0, 1, 2]")
    q = Prompt(query="Reverse [0, 1, 2]")
    assert q.user_text() == "Reverse [0, 1, 2]"
    counts = part_token_counts(p, HFTokenCounter(tok), tok)
    assert counts["total"] == len(tok(render(p, tok), add_special_tokens=False)["input_ids"])
    assert counts["overhead"] > 0 and counts["template"] > counts["query"] > 0


def test_loss_only_on_the_completion(tiny):
    _, tok = tiny
    p = _prompts(1)[0]
    enc = encode_for_training(p, tok, max_length=1024)
    n_prompt = enc["prompt_tokens"]
    assert all(label == -100 for label in enc["labels"][:n_prompt])
    target = enc["labels"][n_prompt:]
    assert tok.decode(target) == "[2, 1, 0]<|im_end|>"
    assert enc["input_ids"][n_prompt:] == target


def test_truncation_keeps_the_query_and_the_answer(tiny):
    _, tok = tiny
    p = Prompt(template="word " * 500, query="Reverse [7, 8]", answer="[8, 7]")
    enc = encode_for_training(p, tok, max_length=64)
    assert len(enc["input_ids"]) == 64 and enc["truncated_tokens"] > 0
    assert "Reverse [7, 8]" in tok.decode(enc["input_ids"])
    assert tok.decode([t for t in enc["labels"] if t != -100]) == "[8, 7]<|im_end|>"


def test_length_grouped_batches_cover_every_record_once():
    import random

    recs = [{"input_ids": [0] * n, "id": n} for n in range(1, 40)]
    bs = batches(recs, 4, True, random.Random(0))
    ids = sorted(r["id"] for b in bs for r in b)
    assert ids == list(range(1, 40))
    spread = max(max(len(r["input_ids"]) for r in b) - min(len(r["input_ids"]) for r in b) for b in bs)
    assert spread <= 4 * 2  # sorted within chunks: neighbours have close lengths


def _lora_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


@pytest.fixture()
def fresh_tiny():
    from promptintern.models import load_model

    return load_model("tiny", device="cpu")


def test_two_stages_loss_falls_and_stage_two_starts_from_stage_one(fresh_tiny, tmp_path):
    model, tok = fresh_tiny
    cfg = TrainConfig.from_dict({"lr": 1e-2, "epochs": 6, "batch_size": 4, "progress": False, "warmup_ratio": 0.0,
                                 "lora": {"r": 8, "alpha": 16, "dropout": 0.0}})
    full = [encode_for_training(p, tok, 512) for p in _prompts()]
    peft1 = attach_adapter(model, cfg, None)
    init = _lora_state(peft1)
    r1 = train_stage(peft1, tok, full, cfg, tmp_path / "s1")
    s1 = _lora_state(peft1)
    assert r1.losses[-1] < r1.losses[0] - 1.0, r1.losses
    assert json.loads((tmp_path / "s1" / "loss_curve.json").read_text())["losses"] == r1.losses
    assert any(not torch.equal(init[k], s1[k]) for k in init)

    base = peft1.unload()
    query_only = [encode_for_training(Prompt(query=p.query, answer=p.answer), tok, 512) for p in _prompts()]
    peft2 = attach_adapter(base, cfg, str(tmp_path / "s1"))
    loaded = _lora_state(peft2)
    assert set(loaded) == set(s1)
    assert all(torch.equal(loaded[k], s1[k]) for k in s1), "stage 2 must start from stage 1's adapter"
    r2 = train_stage(peft2, tok, query_only, cfg, tmp_path / "s2")
    s2 = _lora_state(peft2)
    assert r2.losses[-1] < r2.losses[0] - 0.5, r2.losses
    assert any(not torch.equal(s1[k], s2[k]) for k in s1)
    assert (tmp_path / "s2" / "adapter_model.safetensors").is_file()


def test_training_is_deterministic_under_a_seed(tmp_path):
    from promptintern.models import load_model

    losses = []
    for run in range(2):
        model, tok = load_model("tiny", device="cpu")
        cfg = TrainConfig.from_dict({"lr": 1e-3, "epochs": 1, "batch_size": 4, "progress": False, "seed": 7})
        recs = [encode_for_training(p, tok, 512) for p in _prompts(8)]
        losses.append(train_stage(attach_adapter(model, cfg, None), tok, recs, cfg, tmp_path / str(run)).losses)
    assert losses[0] == losses[1]


def test_completion_loss_equals_the_models_own_loss(tiny):
    from promptintern.trainer import collate, completion_loss

    model, tok = tiny
    recs = [encode_for_training(p, tok, 512) for p in _prompts(3)]
    ids, labels, mask = collate(recs, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        ours = completion_loss(model, ids, mask, labels)
        ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)


def test_bf16_autocast_where_the_cpu_has_it_fp32_master_weights_and_recorded(tmp_path):
    """precision auto: bf16 autocast where the device computes bf16 natively, fp32 otherwise; the adapter's
    weights stay fp32 (master weights); the stage records what ran; the losses agree with fp32 within 2 %."""
    from promptintern.models import load_model
    from promptintern.trainer import cpu_has_bf16, resolve_precision

    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_bf16() else "fp32")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", torch.device("cpu"))
    out = {}
    for precision in ("fp32", "bf16"):
        model, tok = load_model("tiny", device="cpu")
        records = [encode_for_training(p, tok, 256) for p in _prompts(8)]
        cfg = TrainConfig(batch_size=4, epochs=1, lr=1e-3, precision=precision, progress=False,
                          lora=TrainConfig().lora.__class__(r=4, alpha=8, dropout=0.0))
        peft_model = attach_adapter(model, cfg, None)
        res = train_stage(peft_model, tok, records, cfg, tmp_path / precision)
        assert res.precision == precision
        assert all(p.dtype == torch.float32 for p in peft_model.parameters() if p.requires_grad)
        out[precision] = res.losses
    assert out["bf16"] == pytest.approx(out["fp32"], rel=0.02)
