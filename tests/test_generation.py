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
    assert cut_at_stop("ls -la\n```\nmore", ["\n```"]) == "ls -la"
    assert cut_at_stop("abc", []) == "abc"
    assert cut_at_stop("a;b|c", [";", "|"]) == "a"
