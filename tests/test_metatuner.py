"""MetaTuner's pieces on the tiny model: per-sample LoRA, meta encoder split, gradient routing, sync, D2."""

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from promptintern.errors import ConfigError
from promptintern.metatuner.config import MetaTunerConfig, method_label, seed_prompt_text
from promptintern.metatuner.modules import encode_lower
from promptintern.metatuner.per_sample_lora import PerSampleLoRALinear, per_sample_factors
from promptintern.metatuner.train import MetaTuner, TrainItem, rollouts, select_d2

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fresh():
    """A function returning a new tiny model each call (MetaTuner wraps layers in place)."""
    from promptintern.models import load_model

    torch.set_num_threads(1)
    return lambda: load_model("tiny", device="cpu")


def _mt(fresh, **options) -> MetaTuner:
    g, tok = fresh()
    m, _ = fresh()
    torch.manual_seed(0)
    return MetaTuner.build(MetaTunerConfig.from_dict({"max_prompt_tokens": 6, "max_length": 128, **options}), g, m, tok)


# ------------------------------------------------------------------------------------------ per-sample LoRA
def test_per_sample_lora_equals_standard_lora_with_shared_factors():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    r, scale = 3, 2.0
    base = nn.Sequential(nn.Linear(16, 24))
    x = torch.randn(5, 7, 16)
    A, B = torch.randn(r, 16), torch.randn(24, r)
    peft_model = get_peft_model(
        nn.Sequential(nn.Linear(16, 24)), LoraConfig(r=r, lora_alpha=r * scale, target_modules=["0"], lora_dropout=0.0)
    )
    peft_model.base_model.model[0].base_layer.load_state_dict(base[0].state_dict())
    peft_model.base_model.model[0].lora_A["default"].weight.data.copy_(A)
    peft_model.base_model.model[0].lora_B["default"].weight.data.copy_(B)
    layer = PerSampleLoRALinear(base[0], scale)
    manual = base[0](x) + scale * (x @ A.T @ B.T)
    with per_sample_factors({"l": layer}, {"l": (A.expand(5, -1, -1), B.expand(5, -1, -1))}):
        y = layer(x)
    torch.testing.assert_close(y, peft_model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, manual, rtol=1e-5, atol=1e-5)
    with per_sample_factors({"l": layer}, {"l": (A, B)}):  # one shared (2-D) pair broadcasts too
        torch.testing.assert_close(layer(x), manual, rtol=1e-5, atol=1e-5)
    assert layer.A is None and torch.equal(layer(x), base[0](x))  # cleared after the block

    As, Bs = torch.randn(5, r, 16), torch.randn(5, 24, r)  # different factors: each row its own LoRA
    with per_sample_factors({"l": layer}, {"l": (As, Bs)}):
        y = layer(x)
    for i in range(5):
        torch.testing.assert_close(y[i], base[0](x[i]) + scale * (x[i] @ As[i].T @ Bs[i].T), rtol=1e-5, atol=1e-5)


def test_actor_per_sample_lora_matches_peft_on_the_tiny_llama(fresh):
    from peft import LoraConfig, get_peft_model

    from promptintern.metatuner.modules import Actor

    m, tok = fresh()
    ref, _ = fresh()
    ids = tok(["Count to three.", "Name a colour please."], return_tensors="pt", padding=True)
    actor = Actor(m, ["q_proj", "v_proj"], scale=2.0)
    peft_model = get_peft_model(ref, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    torch.manual_seed(1)
    factors = {}
    for name, layer in actor.layers.items():
        A, B = torch.randn(4, layer.in_features) * 0.1, torch.randn(layer.out_features, 4) * 0.1
        factors[name] = (A.expand(2, -1, -1), B.expand(2, -1, -1))
        peft_layer = peft_model.base_model.model.get_submodule(name)
        peft_layer.lora_A["default"].weight.data.copy_(A)
        peft_layer.lora_B["default"].weight.data.copy_(B)
    with torch.no_grad(), actor.factors(factors):
        ours = m(**ids).logits
    with torch.no_grad():
        theirs = peft_model(**ids).logits
        plain = m(**ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, plain)


# ------------------------------------------------------------------------------------------ G's split
def test_meta_encoder_is_the_first_k_layers(fresh):
    g, tok = fresh()
    enc = tok(["A question about apples", "Hi"], return_tensors="pt", padding=True)
    enc["attention_mask"][1, 2:] = 0  # right padding
    with torch.no_grad():
        full = g(**enc, output_hidden_states=True).hidden_states
        for k in (0, 1):
            torch.testing.assert_close(encode_lower(g, enc["input_ids"], enc["attention_mask"], k), full[k])


def test_gradients_reach_the_meta_encoder_from_both_losses_and_never_the_frozen_copy(fresh):
    mt = _mt(fresh)
    G = mt.G
    assert G.k == 1 and G.n_layers == 2
    with torch.no_grad():  # W_u^b and LoRA B start at zero (ΔW = 0); move them so every factor gets a gradient
        mt.F.up_b.weight.normal_(0, 0.02)
        for p in G.phi_s_params() + G.phi_p_params():
            p.normal_(0, 0.02)
    seed = "Solve the problem."
    items = [TrainItem("a", "2 + 2?", "4"), TrainItem("b", "3 + 5?", "8")]

    def grads(params):
        return [p.grad for p in params]

    def nonzero(params):
        return all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)

    mt.task_loss(items, ["Add the numbers.", "Sum them."], seed).backward()
    assert nonzero(G.phi_s_params()), "task loss must reach φ_s through h_i"
    assert nonzero(list(mt.F.parameters()))
    assert all(g is None for g in grads(G.phi_p_params())), "task loss must not reach φ_p (prompts are discrete)"
    assert all(g is None for g in grads(G.phi_p_frozen_params()))

    for p in G.phi_s_params() + list(mt.F.parameters()):
        p.grad = None
    mt.reg_loss([("2 + 2?", "Add the numbers."), ("3 + 5?", "Sum them.")], seed).backward()
    assert nonzero(G.phi_s_params()), "regularization loss must reach φ_s"
    assert nonzero(G.phi_p_params())
    assert all(g is None for g in grads(G.phi_p_frozen_params()))
    assert all(p.grad is None for p in mt.F.parameters())
    assert not any(p.requires_grad for p in G.phi_p_frozen_params())


def test_no_share_gives_the_hypernetwork_its_own_encoder(fresh):
    mt = _mt(fresh, ablation="no_share")
    G = mt.G
    assert G.separate_encoder and G.encoder_params() and set(map(id, G.encoder_params())).isdisjoint(map(id, G.phi_s_params()))
    with torch.no_grad():
        mt.F.up_b.weight.normal_(0, 0.02)
        for p in G.encoder_params():
            p.normal_(0, 0.02)
    mt.task_loss([TrainItem("a", "2 + 2?", "4")], ["Add."], "Solve.").backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.encoder_params())
    assert all(p.grad is None for p in G.phi_s_params())
    k0 = _mt(fresh, ablation="no_share", no_share_encoder="embedding")
    assert k0.G.k == 0 and not k0.G.phi_s_params()


def test_sync_copies_phi_p_into_the_frozen_copy(fresh):
    mt = _mt(fresh)
    G = mt.G
    g_text = mt.g_text("Solve the problem.", "What is 2 + 2?")
    before = mt.greedy_prompts([g_text], decoder="frozen")[0].text
    with torch.no_grad():
        for p in G.phi_p_params():
            p.normal_(0, 0.5)
    live, frozen = G.phi_p_params(), G.phi_p_frozen_params()
    assert len(live) == len(frozen) > 0
    assert not all(torch.equal(a, b) for a, b in zip(live, frozen, strict=True))
    assert mt.greedy_prompts([g_text], decoder="frozen")[0].text == before  # φ_p' untouched by φ_p's change
    phi_s = [p.detach().clone() for p in G.phi_s_params()]
    G.sync()
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in zip(live, frozen, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(phi_s, G.phi_s_params(), strict=True))
    assert mt.greedy_prompts([g_text], decoder="frozen")[0].text == mt.greedy_prompts([g_text], decoder="live")[0].text


# ------------------------------------------------------------------------------------------ D2
def test_d2_keeps_only_prompts_whose_rollout_answered_correctly():
    d2 = select_d2(
        ["q1", "q2", "q3"],
        [["p1a", "p1b", "p1c"], ["p2a", "p2b", "p2a"], ["p3a", "p3b", "p3c"]],
        [[1.0, 0.0, 1.0], [1.0, None, 1.0], [0.0, 0.5, 0.0]],
        threshold=1.0,
        max_per_query=5,
    )
    assert [(d["id"], d["prompt"]) for d in d2] == [("q1", "p1a"), ("q1", "p1c"), ("q2", "p2a")]
    capped = select_d2(["q"], [["x", "y", "z"]], [[60.0, 90.0, 10.0]], threshold=50.0, max_per_query=1)
    assert [d["prompt"] for d in capped] == ["y"]  # best first, threshold on a 0-100 metric


def test_rollouts_route_scores_to_their_prompts(fresh, monkeypatch):
    mt = _mt(fresh, n_rollouts=3, rollout_max_new_tokens=3, batch_size=2)
    items = [TrainItem(f"q{i}", f"What is {i} + 1?", str(i + 1), example=i) for i in range(3)]
    monkeypatch.setattr(mt, "sample_prompts", lambda texts, n, batch_size=8: [[f"good {t[-20:]}", "bad", "worse"] for t in texts])

    class StubTask:
        name, primary_metric, max_new_tokens, stop = "stub", "accuracy", 3, []

        def score(self, preds, examples):  # the first rollout of every query is "correct"
            return [{"accuracy": 1.0 if k % 3 == 0 else 0.0} for k in range(len(preds))]

    d2, stats = rollouts(mt, items, StubTask(), "Solve.")
    assert [d["id"] for d in d2] == ["q0", "q1", "q2"]
    assert all(d["prompt"].startswith("good") for d in d2)
    assert stats["rollouts"] == 9 and stats["passed"] == 3 and stats["d2_size"] == 3


# ------------------------------------------------------------------------------------------ config
def test_config_labels_k_and_validation():
    assert method_label({}) == "metatuner-J"
    assert method_label({"variant": "I"}) == "metatuner-I"
    assert method_label({"ablation": "no_param"}) == "metatuner-J/no-param"
    assert method_label({"ablation": "no_share", "no_share_encoder": "embedding"}) == "metatuner-J/no-share-k0"
    cfg = MetaTunerConfig()
    assert cfg.shared_layers(30) == 8 and cfg.shared_layers(2) == 1 and cfg.shared_layers(28) == 7
    assert MetaTunerConfig(share_layers=3).shared_layers(30) == 3
    assert MetaTunerConfig(ablation="no_share", no_share_encoder="embedding").shared_layers(30) == 0
    assert cfg.threshold("nl2bash", "bleu") == 50.0 and cfg.threshold("gsm8k", "accuracy") == 1.0
    with pytest.raises(ConfigError, match="unknown key"):
        MetaTunerConfig.from_dict({"rank": 4})
    with pytest.raises(ConfigError, match="variant"):
        MetaTunerConfig.from_dict({"variant": "K"})
    tpl = "You are a tutor.\nBe careful.\n\n## Format\n\n- one line"
    assert seed_prompt_text(MetaTunerConfig(seed_prompt="first_paragraph"), tpl) == "You are a tutor.\nBe careful."
    assert seed_prompt_text(MetaTunerConfig(seed_prompt="Just answer."), tpl) == "Just answer."


@pytest.mark.parametrize("name", ["metatuner_cpu.yaml", "metatuner_gpu.yaml"])
def test_experiment_files_name_every_variant_and_ablation(name):
    cfg = yaml.safe_load((ROOT / "experiments" / name).read_text())
    labels = [method_label(m.get("options")) for m in cfg["methods"] if m["name"] == "metatuner"]
    suffix = "/d2-mixed" if name == "metatuner_cpu.yaml" else ""  # the CPU run draws D2 from G and the rules
    assert sorted(labels) == sorted(
        [f"{x}{suffix}" for x in
         ("metatuner-I", "metatuner-J", "metatuner-J/no-param", "metatuner-J/no-prompt", "metatuner-J/no-share")]
    )
    assert {"gsm8k", "mbpp", "nl2bash"} <= set(cfg["tasks"]["train"])
    assert {"promptintern", "full_prompt_ft", "query_only_ft"} <= {m["name"] for m in cfg["methods"]}


# ------------------------------------------------------------------------------------------ co-adaptation (issue 16)
class _StubTask:
    """Scores the first rollout of every query ``good`` (default 0: no rollout reaches a threshold of 1)."""

    name, primary_metric, max_new_tokens, stop = "stub", "accuracy", 3, []

    def __init__(self, good: float = 0.0):
        self.good = good

    def score(self, preds, examples):
        return [{"accuracy": self.good if k % 2 == 0 else 0.0} for k in range(len(preds))]


def _items(n: int = 4) -> list:
    return [TrainItem(f"q{i}", f"What is {i} plus {i + 1}?", str(2 * i + 1), example=i) for i in range(n)]


def _fit(fresh, monkeypatch, n_items: int = 4, **options):
    """fit() on the tiny model with stubbed sampling (rollouts are cheap and deterministic); the History and the
    number of task-path prompt generations."""
    from promptintern.metatuner.train import History, fit

    mt = _mt(fresh, n_rollouts=2, rollout_max_new_tokens=2, batch_size=1, max_prompt_tokens=4, progress=False,
             lr_g=5e-2, **options)
    monkeypatch.setattr(mt, "sample_prompts", lambda texts, n, batch_size=8: [[f"keep {i} rules", "x"] for i in range(len(texts))])
    calls = []
    real = mt.greedy_prompts

    def counted(texts, **kw):
        calls.append(len(texts))
        return real(texts, **kw)

    monkeypatch.setattr(mt, "greedy_prompts", counted)
    history = History()
    fit(mt, _items(n_items), _StubTask(good=1.0), "Add the numbers. Answer with the sum.", seed=0, history=history)
    return mt, history, calls


def test_a_step_cadence_syncs_rebuilds_d2_and_regenerates_prompts_within_an_epoch(fresh, monkeypatch):
    # 2 queries, batches of 1, 2 epochs (steps 0-3); refresh_every=2: the epoch cadence refreshes at epoch 0 only
    common = dict(n_items=2, epochs=2, refresh_every=2, variant="J")
    mt, h, calls = _fit(fresh, monkeypatch, refresh_steps=3, **common)
    assert [(r["epoch"], r["step"]) for r in h.rollouts] == [(0, 0), (1, 3)]  # D2 rebuilt mid-epoch, at step 3
    assert 3 in h.syncs  # φ_p' <- φ_p there
    assert sum(calls) == 3  # each query's prompt once, then the step-3 query's again from the synced decoder
    _, h0, calls0 = _fit(fresh, monkeypatch, refresh_steps=0, **common)
    assert [r["step"] for r in h0.rollouts] == [0] and sum(calls0) == 2  # the epoch cadence: prompts cached throughout


def test_alternate_every_changes_the_update_sequence(fresh, monkeypatch):
    _, one, _ = _fit(fresh, monkeypatch, variant="I", alternate_every=1)
    _, two, _ = _fit(fresh, monkeypatch, variant="I", alternate_every=2)
    assert [s["updates"] for s in one.steps] == [["task", "reg"]] * 4
    assert [s["updates"] for s in two.steps] == [["task"], ["task", "reg", "reg"]] * 2


def test_d2_is_never_silently_empty_with_the_best_fallback(fresh, monkeypatch):
    from promptintern.metatuner.train import best_rollouts

    d2 = best_rollouts(["a", "b", "c", "d"], [["a1", "a2"], ["b1", "b2"], ["c1", "c2"], ["d1", "d2"]],
                       [[0.1, 0.4], [0.0, 0.0], [0.9, None], [None, None]])
    assert [(d["id"], d["prompt"]) for d in d2] == [("c", "c1")]  # best per query, the better half (3 scored // 2)
    mt = _mt(fresh, n_rollouts=2, rollout_max_new_tokens=2, batch_size=2, d2_fallback="best")
    monkeypatch.setattr(mt, "sample_prompts", lambda texts, n, batch_size=8: [[f"p{i}", "q"] for i in range(len(texts))])
    d2, stats = rollouts(mt, _items(), _StubTask(good=0.5), "Add.")  # below the threshold 1, above the floor 0
    assert d2 and stats["d2_fallback"] and stats["d2_size"] == len(d2) and stats["d2_mean_reward"] == 0.5
    mt.cfg.d2_fallback = "none"
    d2, stats = rollouts(mt, _items(), _StubTask(good=0.5), "Add.")
    assert d2 == [] and stats["d2_size"] == 0 and not stats["d2_fallback"]  # recorded, not silent


def test_query_pooling_separates_queries_that_share_a_long_prefix(fresh):
    seed = " ".join(["Follow the house rules for every answer and keep the format exact."] * 12)
    queries = ["What is 12 plus 30?", "Name the capital of France, please."]

    def spread(pool: str) -> float:
        mt = _mt(fresh, pool=pool, max_length=512)
        with torch.no_grad():
            h = mt.hidden([mt.g_text(seed, q) for q in queries])
        return float((h[0] - h[1]).norm() / h[0].norm())

    mean, query = spread("mean"), spread("query_mean")
    assert query > 0.2, query  # the stated tolerance: h_i of two queries differ by > 20 % of |h|
    assert query > 3 * mean, (mean, query)  # the whole-input mean is dominated by the shared prefix


def test_the_relevant_warmup_target_depends_on_the_query(fresh):
    from promptintern.metatuner.train import relevant_sentences

    _, tok = fresh()
    seed = "## Task\nWrite SQL for databases. Write bash for files.\n## Output\n- Answer with the command only."
    a = relevant_sentences(seed, "list the files in a folder with bash", tok, 64)
    b = relevant_sentences(seed, "query the users table of the databases in SQL", tok, 64)
    # the answer rule is always kept, then the query's sentences, then what the query asks
    assert a == "Write bash for files. Answer with the command only. Focus: list the files in a folder with bash"
    assert b == ("Write SQL for databases. Answer with the command only. Focus: query the users table of the "
                 "databases in SQL")
    assert len(tok(relevant_sentences(seed, "files", tok, 5), add_special_tokens=False)["input_ids"]) <= 5


def test_gumbel_prompts_carry_the_task_loss_into_the_prompt_decoder(fresh):
    """prompt_objective gumbel: the task loss reaches φ_p (through the straight-through prompt tokens), φ_s and F,
    never the frozen copy; the forward pass uses hard one-hot tokens."""
    from promptintern.metatuner.gumbel import soft_prompts, task_loss

    mt = _mt(fresh, prompt_objective="gumbel", max_prompt_tokens=4)
    items = _items(2)
    g_texts = [mt.g_text("Add.", it.query) for it in items]
    onehot, keep = soft_prompts(mt, g_texts, tau=1.0)
    assert onehot.shape[:2] == (2, 4) and torch.all(onehot.sum(-1) == 1) and keep.dtype == torch.bool
    loss = task_loss(mt, items, "Add.", tau=1.0)
    loss.backward()
    grad = lambda ps: any(p.grad is not None and p.grad.abs().sum() > 0 for p in ps)  # noqa: E731
    assert grad(mt.G.phi_p_params()) and grad(mt.G.phi_s_params()) and grad(list(mt.F.parameters()))
    assert not grad(mt.G.phi_p_frozen_params())


def test_gumbel_fit_trains_without_rollouts_and_is_labelled(fresh, monkeypatch):
    mt, h, _ = _fit(fresh, monkeypatch, n_items=2, prompt_objective="gumbel", variant="J")
    assert h.rollouts == [] and [s["updates"] for s in h.steps] == [["task+prompt"]] * 2
    assert method_label({"prompt_objective": "gumbel"}) == "metatuner-J/gumbel"
    with pytest.raises(ConfigError, match="prompt_objective"):
        MetaTunerConfig.from_dict({"prompt_objective": "gumbel", "ablation": "no_prompt"})


def test_d2_sources_rule_and_mixed(fresh, monkeypatch):
    from promptintern.metatuner.train import candidate_prompts

    mt = _mt(fresh, n_rollouts=2, max_prompt_tokens=16, d2_source="rule")
    monkeypatch.setattr(mt, "sample_prompts", lambda texts, n, batch_size=8: pytest.fail("rule needs no G samples"))
    items = _items(2)
    seed = "Add the two numbers given.\n\nAnswer with the sum only."
    g = [mt.g_text(seed, it.query) for it in items]
    rule = candidate_prompts(mt, items, g, seed, 2)
    assert [len(c) for c in rule] == [2, 2] and all(c.startswith("Answer with the sum") for r in rule for c in r)
    assert rule[0] != rule[1]  # per query
    mt.cfg.d2_source = "mixed"
    monkeypatch.setattr(mt, "sample_prompts", lambda texts, n, batch_size=8: [[f"s{i}"] * n for i in range(len(texts))])
    mixed = candidate_prompts(mt, items, g, seed, 2)
    assert mixed[1] == ["s1", "s1", *rule[1]]
    d2, stats = rollouts(mt, items, _StubTask(good=1.0), seed)
    assert stats["rollouts"] == 8  # 2 queries x (2 samples + 2 rule-written)


def test_d2_can_leave_out_candidates_that_are_no_prompt(fresh, monkeypatch):
    mt = _mt(fresh, n_rollouts=3, batch_size=2, d2_skip_degenerate=True, d2_fallback="best")
    code = "```bash\nfind . -name '*.txt'\n```"
    monkeypatch.setattr(mt, "sample_prompts", lambda texts, n, batch_size=8: [
        [code, "Keep the answer to one exact command line.", "Say something."] for _ in texts])
    class Scores(_StubTask):  # the code candidate answers right (1), the prompt half right (0.5), the last 0
        def score(self, preds, examples):
            return [{"accuracy": (1.0, 0.5, 0.0)[k % 3]} for k in range(len(preds))]

    d2, stats = rollouts(mt, _items(2), Scores(), "Add.")
    assert d2 and all(d["prompt"] != code for d in d2) and stats["d2_fallback"]


def test_the_best_fallback_needs_a_reward_signal():
    from promptintern.metatuner.train import best_rollouts

    assert best_rollouts(["a", "b"], [["a1", "a2"], ["b1", "b2"]], [[0.0, 0.0], [0.0, 0.0]]) == []  # all tie
    assert [d["prompt"] for d in best_rollouts(["a", "b"], [["a1", "a2"], ["b1", "b2"]],
                                               [[0.0, 0.0], [0.0, 1.0]])] == ["b2"]


def test_the_relevant_target_keeps_room_for_the_query(fresh):
    from promptintern.metatuner.train import relevant_sentences

    _, tok = fresh()
    seed = ("Respond with exactly one line containing only the command and nothing else at all, ever, please. "
            "Use find for file searches. Use tar for archives.")
    a = relevant_sentences(seed, "archive the logs with tar", tok, 24)
    b = relevant_sentences(seed, "find files by name", tok, 24)
    assert "tar" in a and "find" in b and a != b


def test_an_incomplete_last_group_keeps_its_regularisation_steps(fresh, monkeypatch):
    _, three, _ = _fit(fresh, monkeypatch, variant="I", alternate_every=3)  # 4 batches: a group of 3, then 1
    assert [u for s in three.steps for u in s["updates"]].count("reg") == 4
