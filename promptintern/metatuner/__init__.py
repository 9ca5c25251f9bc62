"""MetaTuner (Bo et al., "Prompt and Parameter Co-Optimization for Large Language Models", arXiv 2509.24245,
ICLR 2026), as a method the harness runs next to PromptIntern on the same tasks and cost columns.

Reading of the paper implemented here (details, defaults and deviations: ``README.md`` in this folder):

- Generator G rewrites one hand-written seed prompt p̃ into a query-specific prompt, p_i = G(p̃, x_i).
  G's first k decoder layers (with the embeddings) are the shared meta encoder φ_s; the upper layers with the
  final norm and LM head are the prompt decoder φ_p. G's base weights are frozen and it is trained through
  LoRA factors, so φ_s, φ_p and the frozen copy φ_p' are sets of LoRA factors (slots) on those layers.
- Parameter decoder F reads h_i = pool(φ_s(p̃, x_i)) and writes a query-specific LoRA for the actor M:
  θ_b = W_u^b ReLU(W_d^b h_i), θ_a = W_u^a ReLU(W_d^a h_i), ΔW_i = λ θ_b θ_a, applied per sample with
  batched matmuls (:class:`~.per_sample_lora.PerSampleLoRALinear`), since peft holds one adapter per batch.
- Task loss: CE of M_{θ_i}(p_i, x_i) on y_i. p_i is discrete: it is decoded (greedy, no gradient) by φ_s and
  the frozen copy φ_p'. The gradient of the task loss reaches F, and φ_s through h_i; φ_p and φ_p' get none.
- Supervised regularization: next-token CE of G (φ_s + φ_p) on D2 = {(x_i, p_i*)}, the prompts among n
  sampled rollouts per query with which M answered correctly. φ_p' <- φ_p at every sync.
- MetaTuner-I alternates the two losses (a task step, then a regularization step, per batch); MetaTuner-J
  minimizes L_task + α L_reg in one step. Both start from SFT warm-ups of G and M.
- Ablations: ``no_param`` (no F: M answers with its warm-up weights), ``no_prompt`` (p_i = p̃, G is only the
  encoder of F), ``no_share`` (F reads its own encoder: a separate LoRA on G's first k layers, or k = 0).

Public entry points: :func:`~.train.train_metatuner`, :func:`~.train.load_metatuner`,
:func:`~.infer.run_inference`, :class:`~.config.MetaTunerConfig`, :func:`~.config.method_label`; the harness
unit is ``promptintern.harness.metatuner_unit.run_metatuner``.
"""

from .config import MetaTunerConfig, method_label, seed_prompt_text
from .per_sample_lora import PerSampleLoRALinear, SlotLoRALinear

__all__ = [
    "MetaTunerConfig",
    "PerSampleLoRALinear",
    "SlotLoRALinear",
    "method_label",
    "seed_prompt_text",
]
