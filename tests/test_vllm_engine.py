"""promptintern.vllm_engine against a fake server that emulates vLLM's stop logic and prefix cache (the real
server on SmolLM2: tests/test_vllm_server.py, integration tier)."""

import pytest

from promptintern import vllm_engine as ve
from promptintern import vllm_server
from promptintern.errors import ConfigError
from promptintern.generation import finish_row
from promptintern.stopping import cut_at_stop
from promptintern.vllm_server import Completion

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


class FakeServer:
    """vLLM's server as :class:`promptintern.vllm_server.VllmServer` is seen by the engine: a greedy "model" with
    scripted continuations (prompt ids -> the tokens it writes after them; a resubmitted prompt, prompt + some of
    its script, continues the script) and vLLM's stop rules: a stop token id ends the request (stop_reason = the
    id), so does the first occurrence of a stop string in the text this request generated (stop_reason = the
    string, its token kept), else max_tokens ("length"). A request reads half its prompt from the prefix cache
    unless it carries a cache salt."""

    def __init__(self, scripts=()):
        self.calls, self.loaded = [], {}
        self.scripts = {tuple(p): s for p, s in scripts}
        self.args = ["python", "-m", "vllm.entrypoints.openai.api_server"]

    def load_adapter(self, name, path):
        self.loaded[name] = str(path)

    def stop(self):
        pass

    def prefix_cache(self):
        return {"queries": 10.0, "hits": 4.0}

    def _rest(self, ids):
        for base, script in self.scripts.items():
            k = len(ids) - len(base)
            if k >= 0 and tuple(ids[: len(base)]) == base and ids[len(base):] == script[:k]:
                return script[k:]
        raise AssertionError(f"no script continues {ids}")

    def complete(self, model, prompt_ids, max_tokens, *, ignore_eos=True, stop=None, stop_token_ids=None,
                 cache_salt=None):
        self.calls.append({"model": model, "prompt": list(prompt_ids), "max_tokens": max_tokens, "stop": stop,
                           "stop_token_ids": stop_token_ids, "ignore_eos": ignore_eos, "cache_salt": cache_salt})
        new, reason, why = [], "length", None
        for t in self._rest(list(prompt_ids))[:max_tokens]:
            new.append(t)
            if t in (stop_token_ids or ()):
                reason, why = "stop", t
                break
            hit = next((s for s in stop or () if s in TOK.decode(new)), None)
            if hit:
                reason, why = "stop", hit
                break
        return Completion(text=TOK.decode(new), ttft_s=0.01, e2el_s=0.01 + 0.001 * len(new), token_ids=new,
                          prompt_tokens=len(prompt_ids), completion_tokens=len(new),
                          cached_tokens=0 if cache_salt else len(prompt_ids) // 2, finish_reason=reason,
                          stop_reason=why)


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
    """An engine on a fake server whose "model" writes ``script`` after ``prompt``, for each (prompt, script)."""
    return ve.VllmEngine(str(base), server=FakeServer(scripts), tokenizer=TOK, **kwargs)


# -- without vLLM ---------------------------------------------------------------------------------------------


def test_a_missing_vllm_environment_names_the_make_target(tmp_path):
    with pytest.raises(ConfigError) as e:
        ve.check_vllm(tmp_path / "no-env")
    assert e.value.field == "generation.engine" and "make setup-vllm" in str(e.value) and "no-env" in str(e.value)
    broken = tmp_path / "broken" / "bin"
    broken.mkdir(parents=True)
    (broken / "python").symlink_to("/bin/false")  # an interpreter that cannot import vllm
    with pytest.raises(ConfigError, match="cannot import vllm.*make setup-vllm"):
        ve.check_vllm(tmp_path / "broken")


def test_lora_rank_slots_and_round_stops():
    assert [ve.lora_rank_slot(r) for r in (1, 2, 8, 12, 16, 300, 512)] == [1, 8, 8, 16, 16, 320, 512]
    with pytest.raises(ConfigError, match="max_lora_rank"):
        ve.lora_rank_slot(513)
    assert ve.round_stops("anything", None) is None and ve.round_stops("x", ["", ""]) is None
    assert ve.round_stops("no fence yet", ["\n", "\n```"]) == ["\n", "\n```"]
    assert ve.round_stops("```bash\n", ["\n"]) == ["```"]  # inside a fence only its end can lead to a stop
    assert ve.round_stops("x\n```python\n", ["\n```", ";"]) == ["\n```", "```"]
    assert ve.round_stops("```a\n```\n", ["\n"]) == ["\n"]  # closed again


def test_agreement_counts_identical_answers_and_lists_every_other():
    a = ve.agreement(["q1", "q2", "q3"], ["ls -l", "cat x", "pwd"], ["ls -l", "cat y", "pw"], threshold=0.5,
                     reference_name="generate")
    assert (a["n"], a["identical"], a["rate"], a["meets_threshold"]) == (3, 1, pytest.approx(1 / 3), False)
    assert a["disagreements"] == [{"id": "q2", "vllm": "cat x", "reference": "cat y", "first_difference_at": 4},
                                  {"id": "q3", "vllm": "pwd", "reference": "pw", "first_difference_at": 2}]
    same = ve.agreement(["q"], ["x"], ["x"], threshold=1.0, reference_name="generate")
    assert same["rate"] == 1.0 and same["meets_threshold"] and same["disagreements"] == []
    assert ve.agreement([], [], [], threshold=0.8, reference_name="g")["rate"] is None


def test_an_experiment_asking_for_vllm_without_its_environment_fails_before_any_work(tmp_path, monkeypatch):
    """Preflight refuses generation.engine=vllm where vLLM's environment is missing, naming the field and the fix."""
    import yaml

    from promptintern.harness.config import load_experiment
    from promptintern.harness.preflight import check_engine

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "v", "models": ["tiny"], "results_dir": str(tmp_path),
                                    "tasks": {"train": ["mbpp"], "eval": "same"},
                                    "methods": [{"name": "query_only_ft"}], "generation": {"engine": "vllm"}}))
    cfg = load_experiment(path)
    monkeypatch.setattr(vllm_server, "VLLM_ENV", tmp_path / ".venv-vllm")
    with pytest.raises(ConfigError, match="make setup-vllm") as e:
        check_engine(cfg)
    assert e.value.field == "generation.engine"


def test_the_vllm_keys_enter_only_the_vllm_engines_unit_ids():
    from promptintern.harness.config import DEFAULTS
    from promptintern.harness.plan import VLLM_KEYS, unit_generation

    hf = unit_generation({"generation": dict(DEFAULTS["generation"])})
    assert not set(VLLM_KEYS) & set(hf)  # every result before these keys keeps its id
    vllm = unit_generation({"generation": {**DEFAULTS["generation"], "engine": "vllm"}})
    assert set(VLLM_KEYS) <= set(vllm) and "prefix_cache" not in vllm


# -- with a fake server ---------------------------------------------------------------------------------------


def test_generate_sends_token_prompts_greedy_and_fills_generations(base):
    a, b, c = [1, 2, 3], [4, 5], [6]
    engine = engine_with(base, (a, enc("hi") + [EOS] + enc("junk")), (b, enc("ab\ncd" + "e" * 10)), (c, enc("x" * 20)))
    gens = engine.generate([a, b, c], max_new_tokens=6, stop=["\n"], eos_token_ids=[EOS])

    calls = sorted(engine.server.calls, key=lambda x: x["prompt"])
    assert [x["prompt"] for x in calls] == [a, b, c]  # the caller's ids, nothing added
    for x in calls:
        assert x["model"] == "base" and x["max_tokens"] == 6 and x["stop"] == ["\n"] and x["cache_salt"] is None
        assert x["stop_token_ids"] == [EOS] and x["ignore_eos"] is True  # exactly the caller's end-of-turn ids

    assert [g.stop_reason for g in gens] == ["eos", "stop", "length"]
    assert [g.output_tokens for g in gens] == [3, 3, 6]  # end of turn counted; the token completing the stop
    assert [g.text for g in gens] == ["hi", "ab", "xxxxxx"]
    assert [g.raw_text for g in gens] == ["hi", "ab\n", "xxxxxx"]
    assert [g.prompt_tokens for g in gens] == [3, 2, 1]
    assert all(g.batch_size == 3 and g.batch_index == 0 for g in gens)
    assert all(g.ttft_s == pytest.approx(0.01) and g.e2e_s > 0 for g in gens)
    assert [g.cached_tokens for g in gens] == [1, 1, 0]  # the server's count (the fake reads half the prompt)

    stats = engine.stats()
    assert stats["calls"] == 1 and stats["rounds"] == 3 and stats["requests"] == 3
    assert stats["prompt_tokens"] == 6 and stats["cached_prompt_tokens"] == 1 + 1 + 0
    assert stats["prefix_cache_hit_rate"] == pytest.approx(2 / 6)
    assert stats["vllm_prefix_cache"] == {"queries": 10, "hits": 4}
    assert engine.generate([], max_new_tokens=4, stop=None, eos_token_ids=[EOS]) == []
    with pytest.raises(ConfigError, match="max_new_tokens"):
        engine.generate([a], max_new_tokens=0, stop=None, eos_token_ids=[EOS])


def test_uncached_requests_each_carry_a_fresh_cache_salt(base):
    prompts = [[1, 2], [1, 3], [1, 2]]
    engine = engine_with(base, *((p, enc("ok") + [EOS]) for p in prompts[:2]))
    gens = engine.generate(prompts, max_new_tokens=4, stop=None, eos_token_ids=[EOS], cached=False)
    salts = [x["cache_salt"] for x in engine.server.calls]
    assert all(salts) and len(set(salts)) == 3  # no request can read a block another wrote
    assert [g.cached_tokens for g in gens] == [0, 0, 0] and engine.stats()["cached_prompt_tokens"] == 0


@pytest.mark.parametrize(
    ("script", "stop", "calls"),
    [
        ("```bash\nls -l\n```\nmore text", ["\n"], 3),  # NL2Bash: "\n" inside the fence does not count
        ("Here:\n```python\nx=1\n```\nbye", ["\n```"], 2),  # MBPP: "\n```" that opens the fence does not count
        ("plain\nline", ["\n"], 1),
    ],
)
def test_stop_strings_that_do_not_count_are_generated_past(base, script, stop, calls):
    prompt = [7, 7]
    full = enc(script) + [EOS]
    engine = engine_with(base, (prompt, full))
    (g,) = engine.generate([prompt], max_new_tokens=64, stop=stop, eos_token_ids=[EOS])

    # The HF engines' definitions, applied to the whole greedy continuation.
    n_ref, reason_ref = finish_row(TOK, full, {EOS}, stop)
    assert (g.output_tokens, g.stop_reason) == (n_ref, reason_ref) == (n_ref, "stop")
    assert g.text == cut_at_stop(TOK.decode(full), stop) == cut_at_stop(TOK.decode(full[:n_ref]), stop)
    sent = engine.server.calls
    assert len(sent) == calls
    if calls > 1:  # a resubmission continues from the tokens so far, with the budget that is left
        first_stop = sent[0]["stop"][0]
        done = len(script[: script.index(first_stop) + len(first_stop)])
        assert sent[1]["prompt"] == prompt + full[:done] and sent[1]["max_tokens"] == 64 - done
        assert "```" in sent[1]["stop"]  # inside the fence: wait for it to close
    assert engine.stats()["resubmitted_requests"] == calls - 1 and engine.stats()["requests"] == 1


def test_each_adapter_folder_is_loaded_once_under_a_name_of_its_weights(base, tmp_path):
    from promptintern.adapter_host import AdapterError, AdapterNotFoundError

    a, b = make_adapter(tmp_path / "ad" / "a"), make_adapter(tmp_path / "ad" / "b")
    prompt = [9]
    engine = engine_with(base, (prompt, enc("ok") + [EOS]))
    for folder in (a, tmp_path / "ad" / "b" / ".." / "a", b, str(b)):
        engine.generate([prompt], max_new_tokens=4, stop=None, eos_token_ids=[EOS], adapter_dir=folder)
    served = [x["model"] for x in engine.server.calls]
    assert served[0] == served[1] != served[2] == served[3]
    assert served[0].startswith("a-") and served[2].startswith("b-")
    assert engine.server.loaded == {served[0]: str(a.resolve()), served[2]: str(b.resolve())}  # loaded once each

    with pytest.raises(AdapterError, match="max_lora_rank"):
        engine.generate([prompt], max_new_tokens=4, stop=None, eos_token_ids=[EOS],
                        adapter_dir=make_adapter(tmp_path / "ad" / "big", r=64))
    with pytest.raises(AdapterNotFoundError):
        engine.generate([prompt], max_new_tokens=4, stop=None, eos_token_ids=[EOS], adapter_dir=tmp_path / "none")
    assert engine.adapter_name(None) == "base" and engine.adapter_name(str(a) + "/") == served[0]
    (a / "adapter_model.safetensors").write_bytes(b"retrained")  # rewritten in place: another adapter now
    renamed = engine.adapter_name(a)
    assert renamed not in (served[0], served[2]) and engine.adapter_name(a) == renamed
    assert len(engine.server.loaded) == 3


def test_no_end_of_turn_ids_decodes_the_whole_budget(base):
    prompt = [3]
    engine = engine_with(base, (prompt, enc("ab") + [EOS] + enc("cdefgh")))
    (g,) = engine.generate([prompt], max_new_tokens=5, stop=None, eos_token_ids=[])
    assert engine.server.calls[0]["stop_token_ids"] == [] and engine.server.calls[0]["ignore_eos"]
    assert (g.output_tokens, g.stop_reason, g.text) == (5, "length", "abcd")


def test_one_engine_per_process_and_key(base, monkeypatch):
    made = []

    class Engine:
        def __init__(self, model, **kw):
            self.model, self.kw, self.closed = model, kw, False
            made.append(self)

        def close(self):
            self.closed = True

    monkeypatch.setattr(ve, "VllmEngine", Engine)
    monkeypatch.setattr(ve, "_ENGINE", None)
    first = ve.get_engine(str(base), max_lora_rank=16)
    assert ve.get_engine(str(base / "."), max_lora_rank=9) is first  # same folder, same rank slot
    other = ve.get_engine(str(base), max_lora_rank=32)
    assert other is not first and first.closed and other.kw["max_lora_rank"] == 32 and len(made) == 2
    ve.clear_engine()
    assert ve._ENGINE is None and other.closed


def test_the_report_says_how_often_vllm_answered_as_transformers(tmp_path):
    from promptintern.harness.report import vllm_agreement_lines
    from promptintern.harness.store import ResultStore

    store = ResultStore(tmp_path / "exp")
    base = {"kind": "eval", "status": "ok", "config": {"method": {"label": "few_shot"}, "eval_task": "nl2bash",
                                                      "generation": {"engine": "vllm", "vllm_dtype": "bfloat16"}}}
    store.write("eval-a", {**base, "vllm": {"agreement": ve.agreement(["q1", "q2"], ["a", "b"], ["a", "c"],
                                                                      threshold=0.8, reference_name="generate")}})
    store.write("eval-b", {**base, "config": {**base["config"], "prefix_cache": True},
                           "vllm": {"agreement": ve.agreement(["q1"], ["a"], ["a"], threshold=0.8,
                                                              reference_name="generate")}})
    store.write("eval-c", base)  # another engine: no line
    lines = sorted(vllm_agreement_lines(store))
    assert lines == [
        "vLLM (bfloat16) against generate: 1 of 1 answers identical for few_shot (prefix cached) on nl2bash, at or "
        "above the 80% threshold.",
        "vLLM (bfloat16) against generate: 1 of 2 answers identical for few_shot on nl2bash, below the 80% threshold; "
        "the 1 that differ are listed in `runs/eval-a.json` (vllm.agreement)."]
