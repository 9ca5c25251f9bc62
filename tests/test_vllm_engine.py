"""promptintern.vllm_engine without vLLM (a fake `vllm` module that emulates its stop logic) and, on a GPU with
vLLM installed, against `model.generate`."""

import importlib.util
import math
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from promptintern import vllm_engine as ve
from promptintern.errors import ConfigError
from promptintern.generation import finish_row
from promptintern.stopping import cut_at_stop

REAL_CUDA_AVAILABLE = ve.cuda_available
EOS = 0


class CharTokenizer:
    """One token per character (id = code point); id 0 is the end-of-turn token, special (never decoded)."""

    eos_token_id = EOS

    @staticmethod
    def encode(text: str) -> list[int]:
        return [ord(c) for c in text]

    @staticmethod
    def decode(ids, skip_special_tokens=True) -> str:
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == EOS))


TOK = CharTokenizer()
enc = TOK.encode


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.__dict__.update(kwargs)


class FakeLoRARequest:
    def __init__(self, *args):
        self.args = args
        self.lora_name, self.lora_int_id, self.lora_path = args


@dataclass
class FakeCompletion:
    token_ids: list
    text: str
    finish_reason: str
    stop_reason: object = None


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list
    outputs: list
    metrics: object = None
    num_cached_tokens: int | None = None


class FakeLLM:
    """Greedy "model" with scripted continuations (base prompt ids -> the tokens it writes after them; a
    resubmitted prompt, base + some of its script, continues the script) and vLLM's stop rules: a stop token id
    ends the request (stop_reason = the id), so does the first occurrence of a stop string in the text this
    request generated (stop_reason = the string, its token kept), else max_tokens ("length")."""

    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        self.scripts: dict[tuple, list[int]] = {}
        self.metrics = None
        FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return TOK

    def get_metrics(self):
        return [SimpleNamespace(name="vllm:prefix_cache_queries", value=10),
                SimpleNamespace(name="vllm:prefix_cache_hits", value=4), SimpleNamespace(name="vllm:other", value=1)]

    def _rest(self, ids):
        for base, script in self.scripts.items():
            k = len(ids) - len(base)
            if k >= 0 and tuple(ids[: len(base)]) == base and ids[len(base):] == script[:k]:
                return script[k:]
        raise AssertionError(f"no script continues {ids}")

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append({"prompts": prompts, "params": sampling_params, "lora": lora_request})
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        outs = []
        for prompt, sp in zip(prompts, params, strict=True):
            ids = list(prompt["prompt_token_ids"])
            new, reason, why = [], "length", None
            for t in self._rest(ids)[: sp.max_tokens]:
                new.append(t)
                if t in (sp.stop_token_ids or ()):
                    reason, why = "stop", t
                    break
                hit = next((s for s in sp.stop or () if s in TOK.decode(new)), None)
                if hit:
                    reason, why = "stop", hit
                    break
            outs.append(FakeRequestOutput(ids, [FakeCompletion(new, TOK.decode(new), reason, why)],
                                          metrics=self.metrics, num_cached_tokens=len(ids) // 2))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora, request, inputs = (types.ModuleType(n) for n in ("vllm.lora", "vllm.lora.request", "vllm.inputs"))
    request.LoRARequest = FakeLoRARequest
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    vllm.lora, lora.request, vllm.inputs = lora, request, inputs
    for mod in (vllm, lora, request, inputs):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(ve, "cuda_available", lambda: True)
    monkeypatch.setattr(ve, "_ENGINE", None)
    FakeLLM.instances.clear()
    return vllm


@pytest.fixture
def base(tmp_path):
    folder = tmp_path / "base-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def make_adapter(folder, r=8):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(f'{{"peft_type": "LORA", "r": {r}}}')
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def engine_with(base, *scripts, **kwargs):
    """An engine on a fake LLM whose "model" writes ``script`` after ``prompt``, for each (prompt, script)."""
    engine = ve.VllmEngine(str(base), **kwargs)
    engine.llm.scripts.update({tuple(prompt): script for prompt, script in scripts})
    return engine


# -- without vLLM ---------------------------------------------------------------------------------------------


def test_require_vllm_without_vllm_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, installed or not
    assert ve.vllm_available() is False
    with pytest.raises(ConfigError) as e:
        ve.require_vllm(cuda_check=lambda: True)
    msg = str(e.value)
    assert e.value.field == "generation.engine"
    assert "pip install vllm" in msg and "not importable" in msg and "import of vllm halted" in msg and "CUDA" in msg
    with pytest.raises(ConfigError, match="not importable.*no CUDA device"):
        ve.require_vllm(cuda_check=lambda: False)  # both missing: both named


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_this_environment_has_no_vllm():
    assert ve.vllm_available() is False
    with pytest.raises(ConfigError, match=r"pip install vllm.*ModuleNotFoundError"):
        ve.require_vllm()
    with pytest.raises(ConfigError, match="pip install vllm"):
        ve.VllmEngine("tiny")


def test_require_vllm_names_a_missing_gpu(fake_vllm, monkeypatch):
    import torch

    ve.require_vllm(cuda_check=lambda: True)  # importable + a GPU: nothing raised
    with pytest.raises(ConfigError) as e:
        ve.require_vllm(cuda_check=lambda: False)
    assert "torch.cuda.is_available() is False" in str(e.value) and "not importable" not in str(e.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert REAL_CUDA_AVAILABLE() is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert REAL_CUDA_AVAILABLE() is True


def test_lora_rank_slots_and_round_stops():
    assert [ve.lora_rank_slot(r) for r in (1, 2, 8, 12, 16, 300, 512)] == [1, 8, 8, 16, 16, 320, 512]
    with pytest.raises(ConfigError, match="max_lora_rank"):
        ve.lora_rank_slot(513)
    assert ve.round_stops("anything", None) is None and ve.round_stops("x", ["", ""]) is None
    assert ve.round_stops("no fence yet", ["\n", "\n```"]) == ["\n", "\n```"]
    assert ve.round_stops("```bash\n", ["\n"]) == ["```"]  # inside a fence only its end can lead to a stop
    assert ve.round_stops("x\n```python\n", ["\n```", ";"]) == ["\n```", "```"]
    assert ve.round_stops("```a\n```\n", ["\n"]) == ["\n"]  # closed again


def test_request_times_from_v1_and_v0_metrics():
    v1 = SimpleNamespace(arrival_time=1.7e9, first_token_latency=0.05, first_token_ts=10.0, last_token_ts=10.2)
    ttft, e2e = ve.request_times(v1)
    assert ttft == pytest.approx(0.05) and e2e == pytest.approx(0.25)
    v0 = SimpleNamespace(arrival_time=100.0, first_token_time=100.1, finished_time=100.5, last_token_time=100.4)
    ttft, e2e = ve.request_times(v0)
    assert ttft == pytest.approx(0.1) and e2e == pytest.approx(0.5)
    for missing in (None, SimpleNamespace(arrival_time=5.0, first_token_latency=0.0)):
        ttft, e2e = ve.request_times(missing)
        assert math.isnan(ttft) and e2e is None


# -- with a fake vLLM -----------------------------------------------------------------------------------------


def test_engine_builds_one_llm_with_prefix_caching_and_lora(fake_vllm, base):
    engine = ve.VllmEngine(str(base), max_lora_rank=12, gpu_memory_utilization=0.5, seed=3, max_model_len=4096)
    kw = FakeLLM.instances[0].kwargs
    assert kw["enable_prefix_caching"] is True and kw["enable_lora"] is True
    assert kw["max_lora_rank"] == 16 == engine.max_lora_rank  # 12 is not a rank vLLM accepts: next one up
    assert kw["model"] == str(base.resolve()) and kw["dtype"] == "bfloat16" and kw["seed"] == 3
    assert kw["gpu_memory_utilization"] == 0.5 and kw["max_model_len"] == 4096
    assert kw["disable_log_stats"] is False  # request metrics (TTFT) and prefix-cache counters need stats

    first = ve.get_engine(str(base), max_lora_rank=16)
    assert ve.get_engine(str(base / "."), max_lora_rank=9) is first  # same folder, same rank slot
    assert len(FakeLLM.instances) == 2
    other = ve.get_engine(str(base), max_lora_rank=32)
    assert other is not first and other.max_lora_rank == 32 and len(FakeLLM.instances) == 3
    ve.clear_engine()
    assert ve._ENGINE is None


def test_generate_sends_token_prompts_greedy_and_fills_generations(fake_vllm, base):
    a, b, c = [1, 2, 3], [4, 5], [6]
    engine = engine_with(base, (a, enc("hi") + [EOS] + enc("junk")), (b, enc("ab\ncd" + "e" * 10)), (c, enc("x" * 20)))
    gens = engine.generate([a, b, c], max_new_tokens=6, stop=["\n"], eos_token_ids=[EOS])

    (call,) = engine.llm.calls
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [a, b, c]  # the caller's ids, nothing added
    assert call["lora"] is None
    for sp in call["params"]:
        assert sp.temperature == 0 and sp.max_tokens == 6 and sp.stop == ["\n"]
        assert sp.stop_token_ids == [EOS] and sp.ignore_eos is True  # exactly the caller's end-of-turn ids

    assert [g.stop_reason for g in gens] == ["eos", "stop", "length"]
    assert [g.output_tokens for g in gens] == [3, 3, 6]  # end of turn counted; the token completing the stop
    assert [g.text for g in gens] == ["hi", "ab", "xxxxxx"]
    assert [g.raw_text for g in gens] == ["hi", "ab\n", "xxxxxx"]
    assert [g.prompt_tokens for g in gens] == [3, 2, 1]
    assert all(g.batch_size == 3 and g.batch_index == 0 for g in gens)
    assert all(math.isnan(g.ttft_s) and g.e2e_s > 0 for g in gens)  # no request metrics: NaN and wall time
    if hasattr(gens[0], "cached_tokens"):  # RequestOutput.num_cached_tokens (the fake reports half the prompt)
        assert [g.cached_tokens for g in gens] == [1, 1, 0]

    stats = engine.stats()
    assert stats["calls"] == 1 and stats["rounds"] == 1 and stats["requests"] == 3
    assert stats["prompt_tokens"] == 6 and stats["cached_prompt_tokens"] == 1 + 1 + 0
    assert stats["prefix_cache_hit_rate"] == pytest.approx(2 / 6)
    assert stats["vllm_prefix_cache"] == {"queries": 10, "hits": 4}
    assert engine.generate([], max_new_tokens=4, stop=None, eos_token_ids=[EOS]) == []
    with pytest.raises(ConfigError, match="max_new_tokens"):
        engine.generate([a], max_new_tokens=0, stop=None, eos_token_ids=[EOS])


@pytest.mark.parametrize(
    ("script", "stop", "calls"),
    [
        ("```bash\nls -l\n```\nmore text", ["\n"], 3),  # NL2Bash: "\n" inside the fence does not count
        ("Here:\n```python\nx=1\n```\nbye", ["\n```"], 2),  # MBPP: "\n```" that opens the fence does not count
        ("plain\nline", ["\n"], 1),
    ],
)
def test_stop_strings_that_do_not_count_are_generated_past(fake_vllm, base, script, stop, calls):
    prompt = [7, 7]
    full = enc(script) + [EOS]
    engine = engine_with(base, (prompt, full))
    (g,) = engine.generate([prompt], max_new_tokens=64, stop=stop, eos_token_ids=[EOS])

    # The HF engines' definitions, applied to the whole greedy continuation.
    n_ref, reason_ref = finish_row(TOK, full, {EOS}, stop)
    assert (g.output_tokens, g.stop_reason) == (n_ref, reason_ref) == (n_ref, "stop")
    assert g.text == cut_at_stop(TOK.decode(full), stop) == cut_at_stop(TOK.decode(full[:n_ref]), stop)
    assert len(engine.llm.calls) == calls
    if calls > 1:  # a resubmission continues from the tokens so far, with the budget that is left
        first_new = engine.llm.calls[0]
        done = len(script[: script.index(first_new["params"][0].stop[0]) + len(first_new["params"][0].stop[0])])
        (again,) = engine.llm.calls[1]["prompts"]
        assert again["prompt_token_ids"] == prompt + full[:done]
        assert engine.llm.calls[1]["params"][0].max_tokens == 64 - done
        assert "```" in engine.llm.calls[1]["params"][0].stop  # inside the fence: wait for it to close
    assert engine.stats()["resubmitted_requests"] == calls - 1 and engine.stats()["requests"] == 1


def test_each_adapter_folder_keeps_one_lora_id(fake_vllm, base, tmp_path):
    from promptintern.adapter_host import AdapterError, AdapterNotFoundError

    a, b = make_adapter(tmp_path / "ad" / "a"), make_adapter(tmp_path / "ad" / "b")
    prompt = [9]
    engine = engine_with(base, (prompt, enc("ok") + [EOS]))
    for folder in (a, tmp_path / "ad" / "b" / ".." / "a", b, str(b)):
        engine.generate([prompt], max_new_tokens=4, stop=None, eos_token_ids=[EOS], adapter_dir=folder)
    requests = [c["lora"] for c in engine.llm.calls]
    assert all(isinstance(r, FakeLoRARequest) for r in requests)
    assert [r.lora_int_id for r in requests] == [1, 1, 2, 2]
    assert requests[0].args == ("a-1", 1, str(a.resolve())) and requests[2].args == ("b-2", 2, str(b.resolve()))
    assert engine.stats()["adapters"] == {str(a.resolve()): 1, str(b.resolve()): 2}

    with pytest.raises(AdapterError, match="max_lora_rank"):
        engine.generate([prompt], max_new_tokens=4, stop=None, eos_token_ids=[EOS],
                        adapter_dir=make_adapter(tmp_path / "ad" / "big", r=64))
    with pytest.raises(AdapterNotFoundError):
        engine.generate([prompt], max_new_tokens=4, stop=None, eos_token_ids=[EOS], adapter_dir=tmp_path / "none")
    assert engine.adapter_id(b) == 2 and engine.adapter_id(str(a) + "/") == 1
    (a / "adapter_model.safetensors").write_bytes(b"retrained")  # rewritten in place: another adapter now
    assert engine.adapter_id(a) == 3 and engine.adapter_id(a) == 3 and engine.adapter_id(b) == 2
    assert engine.stats()["adapters"] == {str(a.resolve()): 3, str(b.resolve()): 2}


def test_timings_come_from_request_metrics_when_vllm_reports_them(fake_vllm, base):
    prompt = [3]
    engine = engine_with(base, (prompt, enc("abc") + [EOS]))
    engine.llm.metrics = SimpleNamespace(arrival_time=1.7e9, first_token_latency=0.05, first_token_ts=10.0,
                                         last_token_ts=10.2)
    (g,) = engine.generate([prompt], max_new_tokens=8, stop=None, eos_token_ids=[EOS])
    assert g.ttft_s == pytest.approx(0.05) and g.e2e_s == pytest.approx(0.25, abs=0.05)
    assert g.text == "abc" and g.output_tokens == 4 and g.stop_reason == "eos"


def test_no_end_of_turn_ids_decodes_the_whole_budget(fake_vllm, base):
    prompt = [3]
    engine = engine_with(base, (prompt, enc("ab") + [EOS] + enc("cdefgh")))
    (g,) = engine.generate([prompt], max_new_tokens=5, stop=None, eos_token_ids=[])
    assert engine.llm.calls[0]["params"][0].stop_token_ids == [] and engine.llm.calls[0]["params"][0].ignore_eos
    assert (g.output_tokens, g.stop_reason, g.text) == (5, "length", "abcd")


# -- on a GPU with vLLM ---------------------------------------------------------------------------------------

FIRST_TOKENS = 8


@pytest.mark.gpu
def test_vllm_greedy_agrees_with_hf_generate_on_the_first_tokens(tmp_path):
    """vLLM's kernels differ from transformers', so exact equality over a long continuation is not guaranteed
    (a near-tie can flip a greedy choice late); the first FIRST_TOKENS tokens of a short prompt must agree, with
    the base model and with a freshly initialized LoRA adapter (B = 0: the same function as the base)."""
    if not ve.vllm_available():
        pytest.skip(f"vLLM is not installed ({ve.INSTALL_HINT})")
    if not REAL_CUDA_AVAILABLE():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    import torch

    from promptintern.errors import UnknownModelError
    from promptintern.models import load_model, resolve
    from promptintern.prompts import Prompt, render

    try:
        path = resolve("smollm2-135m")
    except UnknownModelError as e:
        pytest.skip(f"SmolLM2-135M is not available: {e}")
    model, tok = load_model(path, device="cuda", dtype="bfloat16")
    text = render(Prompt(query="Write a Python function that returns the sum of a list of numbers."), tok)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    eos = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None})
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids], device="cuda"), max_new_tokens=2 * FIRST_TOKENS, do_sample=False,
                             eos_token_id=eos, pad_token_id=tok.pad_token_id)
    hf = out[0, len(ids):].tolist()

    from peft import LoraConfig, get_peft_model

    adapter = tmp_path / "zero-lora"
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    del model
    torch.cuda.empty_cache()

    engine = ve.VllmEngine(path, dtype="bfloat16", max_lora_rank=8, gpu_memory_utilization=0.3, max_model_len=2048)
    (base_out,) = engine.generate_token_ids([ids], max_new_tokens=2 * FIRST_TOKENS, stop=None, eos_token_ids=eos)
    (lora_out,) = engine.generate_token_ids([ids], max_new_tokens=2 * FIRST_TOKENS, stop=None, eos_token_ids=eos,
                                            adapter_dir=adapter)
    assert base_out.token_ids[:FIRST_TOKENS] == hf[:FIRST_TOKENS]
    assert lora_out.token_ids[:FIRST_TOKENS] == hf[:FIRST_TOKENS]
    (g,) = engine.generate([ids], max_new_tokens=2 * FIRST_TOKENS, stop=None, eos_token_ids=eos)
    assert g.prompt_tokens == len(ids) and 1 <= g.output_tokens <= 2 * FIRST_TOKENS
    assert g.e2e_s > 0 and (math.isnan(g.ttft_s) or 0 < g.ttft_s <= g.e2e_s)
    assert engine.stats()["calls"] == 3


def test_an_experiment_asking_for_vllm_without_it_fails_before_any_work(tmp_path):
    """Preflight refuses generation.engine=vllm where vLLM (or a GPU) is missing, naming the field and the fix."""
    import yaml

    from promptintern.harness.config import load_experiment
    from promptintern.harness.preflight import check_engine

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "v", "models": ["tiny"], "results_dir": str(tmp_path),
                                    "tasks": {"train": ["mbpp"], "eval": "same"},
                                    "methods": [{"name": "query_only_ft"}], "generation": {"engine": "vllm"}}))
    cfg = load_experiment(path)
    if ve.vllm_available() and ve.cuda_available():
        pytest.skip("vLLM and a GPU are present here")
    with pytest.raises(ConfigError, match="pip install vllm|CUDA"):
        check_engine(cfg)
