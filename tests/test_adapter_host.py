"""AdapterHost: one base model, many merged LoRA adapters, exact restoration; the per-worker host cache."""

from pathlib import Path

import pytest
import torch

from promptintern.adapter_host import AdapterError, AdapterHost, AdapterNotFoundError
from promptintern.models import load_model


def _fresh():
    return load_model("tiny", device="cpu")


def _make_adapter(out: Path, seed: int, **lora) -> str:
    """A LoRA adapter with random (non-zero) A and B saved to ``out``, as a trained one would be."""
    from peft import LoraConfig, get_peft_model

    model, _ = _fresh()
    torch.manual_seed(seed)
    save = lora.pop("modules_to_save", None)
    cfg = LoraConfig(r=lora.pop("r", 4), lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                     modules_to_save=save, **lora)
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if ".modules_to_save." in name:  # a trained copy of a whole module: make it differ from the base
                p.mul_(1.5).add_(0.1)
    pm.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        # all-linear (every projection); attention-only plus a replaced module; the tied embedding.
        "A": _make_adapter(root / "A", 1, target_modules="all-linear"),
        "B": _make_adapter(root / "B", 2, r=2, target_modules=["q_proj", "v_proj"], modules_to_save=["norm"]),
        "C": _make_adapter(root / "C", 3, target_modules=["embed_tokens", "gate_proj"]),
    }


@pytest.fixture()
def host():
    model, tok = _fresh()
    h = AdapterHost(model, tok, name="tiny")
    yield h
    h.close()


IDS = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _old_way(adapter: str):
    """What evaluation units did before the host: a fresh base with the adapter merged."""
    from peft import PeftModel

    model, _ = _fresh()
    return PeftModel.from_pretrained(model, adapter).merge_and_unload()


def _assert_same_params(model, ref) -> None:
    ours, theirs = dict(model.named_parameters()), dict(ref.named_parameters())
    assert ours.keys() == theirs.keys()
    bad = [n for n in ours if not torch.equal(ours[n], theirs[n])]
    assert not bad, f"parameters differ from the reference: {bad[:5]}"


def _assert_pristine(model) -> None:
    base, _ = _fresh()
    _assert_same_params(model, base)
    assert [type(m) for m in model.modules()] == [type(m) for m in base.modules()]
    assert model.config.to_dict() == base.config.to_dict()
    assert not hasattr(model, "peft_config")


def test_each_adapter_matches_a_fresh_base_with_it_merged(host, adapters):
    model_obj = host.model
    for name in ("A", "B", "C", "A"):
        model = host.activate(adapters[name])
        assert model is model_obj and host.active == adapters[name]
        ref = _old_way(adapters[name])
        _assert_same_params(model, ref)  # merged weights identical, bit for bit
        assert torch.allclose(_logits(model), _logits(ref), atol=1e-6), name
        assert [type(m) for m in model.modules()] == [type(m) for m in ref.modules()]


def test_activate_none_restores_the_base_bitwise_and_keeps_storage(host, adapters):
    before = _logits(host.model)
    ptrs = {n: p.data_ptr() for n, p in host.model.named_parameters()}
    for name in ("A", "B", "C"):
        host.activate(adapters[name])
        assert not torch.equal(_logits(host.model), before), f"adapter {name} changed nothing"
        model = host.activate(None)
        assert host.active is None
        _assert_pristine(model)
        assert torch.equal(_logits(model), before)
    # Merging and restoring write into the same storage: compiled / CUDA-graph decode steps stay valid.
    assert {n: p.data_ptr() for n, p in host.model.named_parameters()} == ptrs


def test_a_then_b_then_a_gives_identical_logits(host, adapters):
    first = _logits(host.activate(adapters["A"]))
    b = _logits(host.activate(adapters["B"]))
    c = _logits(host.activate(adapters["C"]))
    again = _logits(host.activate(adapters["A"]))
    assert torch.equal(first, again)
    assert not torch.equal(first, b) and not torch.equal(b, c)


def test_the_prefix_key_follows_the_weights_merged(host, adapters, tmp_path):
    """A prefix KV cache stays valid exactly while the weights it was encoded with are merged: the same adapter
    merged again (identical logits, above) gives the same key; another adapter, the base, or the same folder
    rewritten on disk give another."""
    import shutil

    from promptintern.prefix_cache import model_key

    base = model_key(host.model)
    a = model_key(host.activate(adapters["A"]))
    b = model_key(host.activate(adapters["B"]))
    assert len({base, a, b}) == 3
    assert model_key(host.activate(adapters["A"])) == a
    assert model_key(host.activate(None)) == base
    copy = Path(shutil.copytree(adapters["A"], tmp_path / "A"))
    ka = model_key(host.activate(copy))
    assert ka not in (base, a, b)
    _make_adapter(copy, 7, target_modules="all-linear")  # retrained in place
    host.activate(None)
    assert model_key(host.activate(copy)) not in (base, a, b, ka)


def test_only_targeted_weights_are_copied(host, adapters):
    host.activate(adapters["B"])
    assert all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in host.snapshotted), host.snapshotted
    n_layers = host.model.config.num_hidden_layers
    assert len(host.snapshotted) == 2 * n_layers
    expected = sum(p.numel() * p.element_size() for n, p in host.model.named_parameters()
                   if n.endswith(("q_proj.weight", "v_proj.weight")))
    assert host.snapshot_bytes == expected
    host.activate(adapters["C"])  # the union grows: embeddings and gate projections join
    assert "model.embed_tokens.weight" in host.snapshotted and len(host.snapshotted) == 3 * n_layers + 1


def test_bad_adapter_folders_name_the_path_and_leave_the_host_pristine(host, adapters, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    host.activate(adapters["A"])
    missing = tmp_path / "no" / "such-adapter"
    with pytest.raises(AdapterNotFoundError, match=str(missing)):
        host.activate(missing)
    _assert_pristine(host.model)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AdapterError, match=rf"{empty}.*not a LoRA adapter"):
        host.activate(empty)

    # An adapter trained on a base with other shapes: peft's size-mismatch error, wrapped with the folder.
    small = LlamaForCausalLM(LlamaConfig(vocab_size=host.model.config.vocab_size, hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2))
    other = tmp_path / "other-base"
    get_peft_model(small, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(other)
    host.activate(adapters["B"])
    with pytest.raises(AdapterError, match=rf"{other}.*different base model"):
        host.activate(other)
    assert host.active is None
    _assert_pristine(host.model)  # the half-injected LoRA layers are gone
    _assert_same_params(host.activate(adapters["A"]), _old_way(adapters["A"]))  # and the host still serves


def test_worker_cache_reuses_the_base_and_holds_one_model(tmp_path):
    from promptintern.harness import unit_common
    from promptintern.models import resolve

    unit_common.release_hosts()
    try:
        h1, info1 = unit_common.adapter_host("tiny", device="cpu")
        h2, info2 = unit_common.adapter_host("tiny", device="cpu")
        assert h1 is h2 and not info1["reused"] and info2["reused"] and info2["seconds"] == 0.0
        assert info2["base_load_seconds"] == h1.load_seconds > 0
        # Another model evicts the first (one base model per worker by default).
        h3, info3 = unit_common.adapter_host(resolve("tiny"), device="cpu")
        assert h3 is not h1 and not info3["reused"] and h1.model is None
        assert len(unit_common._HOSTS) == 1
        h4, _ = unit_common.adapter_host("tiny", device="cpu", max_models=2)
        assert h3.model is not None and len(unit_common._HOSTS) == 2
        assert unit_common.release_hosts() == 2 and h4.model is None and h3.model is None
    finally:
        unit_common.release_hosts()


def test_eval_units_reuse_the_base_and_match_a_fresh_worker(tmp_path, data_dir):
    """Two eval units in one process: the second reuses the base; its generations equal a fresh worker's."""
    import yaml

    from promptintern.harness import unit_common
    from promptintern.harness.config import load_experiment
    from promptintern.harness.eval_unit import run_eval
    from promptintern.harness.plan import build_plan
    from promptintern.harness.stage_unit import run_stage
    from promptintern.harness.store import ResultStore

    exp = {
        "name": "hostgrid",
        "models": ["tiny"],
        "tasks": {"train": ["mbpp"], "eval": "same", "train_limit": 2, "test_limit": 2},
        "methods": [{"name": "query_only_ft"}, {"name": "full_prompt_ft"}],
        "prompt": {"compressor": {"name": "truncate", "tokenizer": "tiny"}},
        "train": {"batch_size": 2, "max_length": 256, "lr": 0.01},
        "generation": {"batch_size": 2, "max_new_tokens": 6, "measure": False},
        "results_dir": str(tmp_path / "results"),
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    units = build_plan(load_experiment(path))
    root = str(tmp_path / "store")
    store = ResultStore(root)
    done: dict[str, dict] = {}
    for u in units:
        if u.kind == "stage":
            prev = str(Path(root) / done[u.deps[0]]["adapter_dir"]) if u.deps else None
            done[u.id] = run_stage(u.to_dict(), root, prev, str(data_dir))
    evals = [u for u in units if u.kind == "eval"]
    assert len(evals) == 2

    def adapter_of(u):
        return str(Path(root) / done[u.deps[0]]["adapter_dir"]) if u.deps else None

    unit_common.release_hosts()
    try:
        recs = [run_eval(u.to_dict(), root, adapter_of(u), str(data_dir)) for u in evals]
        loads = [r["efficiency"]["model_load"] for r in recs]
        assert [ld["reused"] for ld in loads] == [False, True]
        assert loads[0]["seconds"] > 0 and loads[1]["seconds"] == 0.0 and loads[1]["base_load_seconds"] > 0
        assert all(ld["adapter_seconds"] >= 0 for ld in loads)
        assert store.read(evals[1].id)["efficiency"]["model_load"]["reused"] is True
        # A fresh worker (no cached base) evaluating the second unit gives the same generations.
        unit_common.release_hosts()
        fresh = run_eval(evals[1].to_dict(), str(tmp_path / "store2"), adapter_of(evals[1]), str(data_dir))
        assert fresh["efficiency"]["model_load"]["reused"] is False
        assert fresh["generations_sha256"] == recs[1]["generations_sha256"]
    finally:
        unit_common.release_hosts()
