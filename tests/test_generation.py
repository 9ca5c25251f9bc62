from promptintern.generation import batch_seconds, cut_at_stop, generate
from promptintern.prompts import Prompt, render


def test_generate_keeps_order_counts_tokens_and_times_batches(tiny):
    model, tok = tiny
    prompts = [render(Prompt(query=q), tok) for q in ("short", "a somewhat longer query " * 5, "mid length query")]
    gens = generate(model, tok, prompts, max_new_tokens=6, batch_size=2)
    assert [g.prompt_tokens for g in gens] == [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert all(1 <= g.output_tokens <= 6 for g in gens)
    assert all(0 < g.ttft_s <= g.e2e_s for g in gens)
    assert sorted(g.batch_size for g in gens) == [1, 2, 2]
    # Each batch's time counted once.
    by_batch = {g.batch_index: g.e2e_s for g in gens}
    assert len(by_batch) == 2 and abs(batch_seconds(gens) - sum(by_batch.values())) < 1e-12
    # Same prompts alone give the same greedy text (batching and left padding do not change results).
    alone = generate(model, tok, prompts[:1], max_new_tokens=6, batch_size=1)
    assert alone[0].text == gens[0].text


def test_cut_at_stop():
    assert cut_at_stop("```bash\nls -la\n```\nmore", ["\n```"]) == "```bash\nls -la"
    # a bare "\n```" after text opens a fence (markdown's rule): it is not a stop (see promptintern.stopping)
    assert cut_at_stop("ls -la\n```\nmore", ["\n```"]) == "ls -la\n```\nmore"
    assert cut_at_stop("abc", []) == "abc"
    assert cut_at_stop("a;b|c", [";", "|"]) == "a"


def test_static_engine_gives_the_same_greedy_text_and_warms_each_shape_once(tiny):
    import pytest

    from promptintern.errors import ConfigError
    from promptintern.generation import CACHE_BUCKET, static_cache_len

    model, tok = tiny
    prompts = [render(Prompt(query=q), tok) for q in ("short", "a somewhat longer query " * 5, "mid length query")]
    dynamic = generate(model, tok, prompts, max_new_tokens=6, batch_size=2)
    model.__dict__.pop("_promptintern_warm", None)
    static = generate(model, tok, prompts, max_new_tokens=6, batch_size=2, engine="static")
    assert [g.text for g in static] == [g.text for g in dynamic]
    assert [g.output_tokens for g in static] == [g.output_tokens for g in dynamic]
    lengths = [g.prompt_tokens for g in static]
    cache_len = static_cache_len(lengths, 6)
    assert cache_len % CACHE_BUCKET == 0 and max(lengths) + 6 <= cache_len < max(lengths) + 6 + CACHE_BUCKET
    # One warm-up per batch size of the call (2 and 1), at the call's single cache length.
    assert model.__dict__["_promptintern_warm"] == {("static", 2, cache_len), ("static", 1, cache_len)}
    with pytest.raises(ConfigError, match="generation.engine"):
        generate(model, tok, prompts, max_new_tokens=2, engine="vllm")


def test_fast_engine_matches_generate_token_for_token(tiny):
    model, tok = tiny
    prompts = [render(Prompt(query=q), tok) for q in ("short", "a somewhat longer query " * 5, "mid length query", "x")]
    for stop in (None, ["a"]):  # "a" appears early in the tiny model's random text: rows stop at different steps
        ref = generate(model, tok, prompts, max_new_tokens=40, batch_size=3, stop=stop)
        fast = generate(model, tok, prompts, max_new_tokens=40, batch_size=3, stop=stop, engine="fast")
        assert [g.text for g in fast] == [g.text for g in ref]
        assert all(f.output_tokens <= r.output_tokens for f, r in zip(fast, ref, strict=True))
        assert all(0 < g.ttft_s <= g.e2e_s for g in fast)


def test_fast_greedy_stops_early_when_every_row_ends(tiny):
    from promptintern.fast_decode import CHECK_EVERY, fast_greedy

    model, tok = tiny
    enc = tok.pad({"input_ids": [tok("hello world", add_special_tokens=False)["input_ids"]] * 2}, return_tensors="pt")
    free, _ = fast_greedy(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=3 * CHECK_EVERY, eos_ids=[],
                          pad_id=tok.pad_token_id, cache_len=256)
    assert free.shape == (2, 3 * CHECK_EVERY)
    first = int(free[0, 0])  # make the first generated token an EOS: the loop ends at the first check
    ended, _ = fast_greedy(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=3 * CHECK_EVERY,
                           eos_ids=[first], pad_id=tok.pad_token_id, cache_len=256)
    assert ended.shape == (2, CHECK_EVERY)
    assert ended[:, 0].tolist() == [first, first] and (ended[:, 1:] == tok.pad_token_id).all()


def test_fast_decode_keeps_a_bounded_number_of_static_caches(tiny):
    from promptintern.fast_decode import MAX_SLOTS, fast_greedy

    model, tok = tiny
    model.__dict__.pop("_promptintern_fast_slots", None)
    enc = tok.pad({"input_ids": [tok("hi", add_special_tokens=False)["input_ids"]]}, return_tensors="pt")
    lens = [64 * (i + 1) for i in range(MAX_SLOTS + 3)]
    for n in lens:
        fast_greedy(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=2, eos_ids=[],
                    pad_id=tok.pad_token_id, cache_len=n)
    slots = model.__dict__["_promptintern_fast_slots"]
    assert [k[1] for k in slots] == lens[-MAX_SLOTS:]  # the most recent shapes are kept, in use order
