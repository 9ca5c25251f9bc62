"""The Gumbel-softmax alternative to MetaTuner's supervised regularisation (the paper's Fig. 4 analysis).

Instead of decoding p_i as text under ``no_grad`` and training the prompt decoder on D2, G decodes p_i token by
token with the straight-through Gumbel-softmax (hard one-hot forward, soft gradient backward), the actor M reads
the one-hot rows through its input embeddings, and the task loss reaches φ_p (and φ_s, F) through the prompt
tokens themselves. G and M must share one vocabulary (the same tokenizer). The paper reports this relaxation
as worse than the supervised regularisation; ``prompt_objective: gumbel`` makes that comparison an axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..prompts import Prompt, end_of_turn, render

MARK = "\u241fPROMPT\u241f"  # where p_i goes in M's rendered prompt


def soft_prompts(mt, g_texts: list[str], tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot rows (n, T, V) with straight-through gradients, keep mask (n, T)): p_i decoded by G with φ_s and
    the live φ_p, ``max_prompt_tokens`` steps; positions from the first end-of-turn token on are masked out."""
    G, tok = mt.G, mt.tok
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(g_texts, add_special_tokens=False, padding=True, return_tensors="pt").to(mt.device)
    finally:
        tok.padding_side = side
    emb = G.lm.get_input_embeddings()
    attn = enc["attention_mask"]
    pos = (attn.long().cumsum(-1) - 1).clamp_min(0)
    eos = torch.tensor(mt.eos_ids, device=mt.device)
    rows, keep = [], []
    alive = torch.ones(attn.shape[0], dtype=torch.bool, device=mt.device)
    with G.mode(lower="live", upper="live"):
        out = G.lm(input_ids=enc["input_ids"], attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        for t in range(mt.cfg.max_prompt_tokens):
            y = F.gumbel_softmax(out.logits[:, -1].float(), tau=tau, hard=True)
            hard = y.argmax(-1)
            alive = alive & ~torch.isin(hard, eos)
            rows.append(y)
            keep.append(alive.clone())
            if t == mt.cfg.max_prompt_tokens - 1:
                break
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
            pos = pos[:, -1:] + 1
            x = (y.to(emb.weight.dtype) @ emb.weight).unsqueeze(1)
            out = G.lm(inputs_embeds=x, attention_mask=attn, position_ids=pos, past_key_values=out.past_key_values,
                       use_cache=True)
    return torch.stack(rows, 1), torch.stack(keep, 1)


def task_loss(mt, items, seed: str, tau: float) -> torch.Tensor:
    """CE of M_{θ_i}(p_i, x_i) on y_i with p_i from :func:`soft_prompts`: the gradient reaches φ_p too."""
    if mt.G.lm.get_input_embeddings().weight.shape[0] != mt.M.lm.get_input_embeddings().weight.shape[0]:
        raise ValueError("prompt_objective gumbel needs G and M to share one vocabulary")
    g_texts = [mt.g_text(seed, it.query) for it in items]
    onehot, keep = soft_prompts(mt, g_texts, tau)
    fac = mt.factors(g_texts)
    emb = mt.M.lm.get_input_embeddings()
    rows, labels = [], []
    for i, it in enumerate(items):
        left, right = render(Prompt(template=MARK, query=it.query), mt.tok, mt.chat).split(MARK, 1)
        ids = lambda s: torch.tensor(mt.tok(s, add_special_tokens=False)["input_ids"], dtype=torch.long,  # noqa: E731
                                     device=mt.device)
        left_ids, right_ids = ids(left), ids(right)
        target = ids(it.target + end_of_turn(mt.tok, mt.chat))[: max(1, mt.cfg.max_length // 2)]
        prompt = onehot[i][keep[i]].to(emb.weight.dtype) @ emb.weight
        rows.append(torch.cat([emb(left_ids), prompt, emb(right_ids), emb(target)], 0)[-mt.cfg.max_length:])
        lab = torch.full((rows[-1].shape[0],), -100, dtype=torch.long, device=mt.device)
        lab[-len(target):] = target
        labels.append(lab)
    width = max(r.shape[0] for r in rows)
    x = torch.zeros(len(rows), width, rows[0].shape[1], dtype=rows[0].dtype, device=mt.device)
    y = torch.full((len(rows), width), -100, dtype=torch.long, device=mt.device)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=mt.device)
    for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        x[i, : r.shape[0]], y[i, : r.shape[0]], mask[i, : r.shape[0]] = r, lab, 1
    with mt.M.factors(fac):
        logits = mt.M.lm(inputs_embeds=x, attention_mask=mask, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100)
