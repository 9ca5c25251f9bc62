"""MetaTuner settings: one flat dataclass read from an experiment's ``methods[].options``.

The paper (Bo et al., 2025) publishes neither the LoRA rank, λ, α, the number of rollouts, nor the sync
interval; every such choice is a field here with a documented default (see ``README.md`` in this package).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import ConfigError
from ..fields import check_fields, integer, list_of, number, setting, text

OPTIONS_FIELD = "methods.metatuner.options."
MODULE_NAMES = list_of(text(), what="a non-empty list of module names")
VARIANTS = ("I", "J")
ABLATIONS = (None, "no_param", "no_prompt", "no_share")
POOLS = ("mean", "query_mean", "last")
WARMUP_TARGETS = ("first_paragraph", "seed", "relevant")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

DEFAULT_REWRITE_INSTRUCTION = (
    "Rewrite the instruction below into a short prompt tailored to the query: keep what this query needs, "
    "drop what it does not. Reply with the prompt only."
)


@dataclass
class MetaTunerConfig:
    # --- method ---------------------------------------------------------------------------------------
    # "I": alternate the task and regularization losses; "J": optimize their sum
    variant: str = setting("J", spec=text(VARIANTS))
    # None | "no_param" | "no_prompt" | "no_share"
    ablation: str | None = setting(None, spec=text(ABLATIONS[1:], null=True))
    # no_share: "separate" (own LoRA on the k lower layers) | "embedding" (k=0)
    no_share_encoder: str = setting("separate", spec=text(("separate", "embedding")))
    generator_model: str | None = None  # G; None: the unit's model (G = M, as in the harness's runs)
    # --- generator G = meta encoder φ_s (embeddings + first k layers) + prompt decoder φ_p ------------------
    # k: a fraction of G's layers (0 < x < 1, rounded, at least 1) or a count (>= 1, or 0)
    share_layers: float = setting(0.25, spec=number(0))
    # h_i: masked mean over G's whole input ("mean": the rewrite instruction and seed prompt are the same prefix
    # for every query, so in a causal LM their states are too and h_i varies little), the mean over the query's
    # tokens only ("query_mean"), or the last token's state ("last")
    pool: str = setting("mean", spec=text(POOLS))
    # p̃: "template" (the task template), "first_paragraph" (its first paragraph), "rules" (the first paragraph and
    # the template's first two sections, e.g. the output format and conventions: short, but with the answer
    # rules), or the text itself
    seed_prompt: str = "template"
    rewrite_instruction: str = DEFAULT_REWRITE_INSTRUCTION
    max_prompt_tokens: int = setting(64, spec=integer(1))  # longest generated prompt p_i
    # G is trained through LoRA factors (φ_s / φ_p / φ_p' are those factors)
    g_lora_r: int = setting(8, spec=integer(1))
    g_lora_alpha: int = 16
    g_lora_targets: list[str] = setting(factory=lambda: list(ALL_LINEAR), spec=MODULE_NAMES)
    g_warmup_epochs: float = setting(1.0, spec=number(0))  # SFT warm-up of G on (p̃, x_i) -> warm-up target
    # G's warm-up target: "first_paragraph" of p̃ or "seed" (p̃ itself, cut to max_prompt_tokens) — the same for
    # every query, so G starts as a constant emitter — or "relevant": p̃'s sentences that share most words with
    # the query, in p̃'s order, up to max_prompt_tokens (a target that depends on the query)
    g_warmup_target: str = setting("first_paragraph", spec=text(WARMUP_TARGETS))
    # --- parameter decoder F (hypernetwork) and the per-sample LoRA on the actor M ---------------------------
    lora_targets: list[str] = setting(factory=lambda: ["q_proj", "v_proj"], spec=MODULE_NAMES)
    lora_r: int = setting(4, spec=integer(1))
    lora_scale: float = setting(1.0, spec=number(0))  # λ in ΔW_i = λ · θ_b · θ_a
    hyper_hidden: int = setting(32, spec=integer(1))  # bottleneck of W_d / W_u
    # --- actor SFT warm-up (a standard LoRA, merged into M before MetaTuner training) ------------------------
    m_warmup_epochs: float = setting(1.0, spec=number(0))
    m_warmup_lr: float = 2e-4
    m_warmup_lora: dict = field(default_factory=lambda: {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"})
    # --- MetaTuner training -----------------------------------------------------------------------------
    epochs: float = setting(1.0, spec=number(0))
    batch_size: int = setting(4, spec=integer(1))
    lr_g: float = setting(2e-4, spec=number(0))  # G's LoRA factors (φ_s, φ_p, and the separate encoder of no_share)
    lr_f: float = setting(1e-3, spec=number(0))  # hypernetwork F
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = setting(1024, spec=integer(1))
    alpha: float = setting(1.0, spec=number(0))  # weight of the supervised regularization loss
    # how the prompt decoder φ_p learns: "supervised" (the paper's regularisation on D2) or "gumbel" (no D2: the
    # task loss reaches φ_p through straight-through Gumbel-softmax prompt tokens; the paper's Fig. 4)
    prompt_objective: str = setting("supervised", spec=text(("supervised", "gumbel")))
    gumbel_tau: float = setting(1.0, spec=number(0, lo_open=True))
    alternate_every: int = setting(1, spec=integer(1))  # variant I: optimizer steps per phase before switching loss
    # task-path prompts from (φ_s, φ_p'): regenerated at each "sync" (cached) or every "step"
    regenerate: str = setting("sync", spec=text(("sync", "step")))
    sync_every: int = setting(0, spec=integer(0))  # φ_p' <- φ_p every this many batches; 0 = at every D2 refresh
    # a step cadence for the co-adaptation: every this many batches, sync φ_p' <- φ_p, rebuild D2 with fresh
    # rollouts and regenerate the task path's prompts (0: at the start of every refresh_every-th epoch)
    refresh_steps: int = setting(0, spec=integer(0))
    # --- rollouts and D2 -----------------------------------------------------------------------------------
    n_rollouts: int = setting(4, spec=integer(1))
    rollout_temperature: float = 1.0
    rollout_top_p: float = 0.95
    rollout_max_new_tokens: int | None = setting(None, spec=integer(1, null=True))  # None: the task's max_new_tokens
    # queries per rollout chunk (x n_rollouts actor generations); None: batch_size
    rollout_batch_size: int | None = setting(None, spec=integer(1, null=True))
    refresh_every: int = setting(1, spec=integer(1))  # epochs between D2 refreshes
    d2_threshold: float | dict = field(default_factory=lambda: {"default": 1.0, "bleu": 50.0})
    d2_max_per_query: int = setting(2, spec=integer(1))
    # when no rollout reaches the threshold: "none" leaves D2 empty (no regularisation until one does), "best"
    # keeps each query's best rollout, the better half of the queries by reward (D2 never empty)
    d2_fallback: str = setting("none", spec=text(("none", "best")))
    # where D2's candidate prompts come from (the paper's Fig. 5): "rollouts" (sampled from G: φ_s + φ_p'), "rule"
    # (written by rule from p̃, no G: the query's relevant sentences at two lengths), or "mixed" (both);
    # every candidate is scored by M's answer and the threshold applies alike
    d2_source: str = setting("rollouts", spec=text(("rollouts", "rule", "mixed")))
    # leave out of D2 the candidates that are no prompt (a repeated line, code, under 4 words: diagnostics.py),
    # whatever their reward: a generator that answers the query instead of rewriting the prompt is not rewarded
    d2_skip_degenerate: bool = False
    # --- misc -----------------------------------------------------------------------------------------------
    progress: bool = True
    # appended to the table label as "[tag]": tells apart rows of an analysis axis that the label does not name
    # (e.g. share_layers or n_rollouts values)
    tag: str | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> MetaTunerConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{OPTIONS_FIELD}{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(known))}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Each field against its rule (:func:`promptintern.fields.check_fields`), then the rules between fields."""
        check_fields(self, OPTIONS_FIELD)

        def req(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{OPTIONS_FIELD}{key}", msg)

        req(self.tag is None or (isinstance(self.tag, str) and self.tag.strip() and "[" not in self.tag), "tag",
            "must be a short non-empty text without brackets")
        req(self.prompt_objective == "supervised" or self.ablation not in ("no_prompt", "no_param"), "prompt_objective",
            "gumbel trains the prompt decoder through the task loss: it needs both branches (no ablation no_prompt "
            "or no_param)")
        req(self.prompt_objective == "supervised" or self.variant == "J", "variant",
            "prompt_objective gumbel has a single loss (nothing to alternate): use variant J")
        req(self.share_layers < 1 or float(self.share_layers).is_integer(), "share_layers",
            "a fraction in (0, 1) or an integer count of layers")

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def prompt_branch(self) -> bool:
        return self.ablation != "no_prompt"

    @property
    def param_branch(self) -> bool:
        return self.ablation != "no_param"

    @property
    def separate_encoder(self) -> bool:
        return self.ablation == "no_share" and self.no_share_encoder == "separate"

    def shared_layers(self, n_layers: int) -> int:
        """k, the number of G's decoder layers in the meta encoder φ_s."""
        if self.ablation == "no_share" and self.no_share_encoder == "embedding":
            return 0
        x = self.share_layers
        if 0 < x < 1:
            return max(1, min(n_layers, round(x * n_layers)))
        return min(n_layers, int(x))

    def threshold(self, task_name: str, primary_metric: str) -> float:
        """The primary score a rollout needs for its prompt to enter D2 (task name, then metric, then default)."""
        t = self.d2_threshold
        if isinstance(t, int | float):
            return float(t)
        for key in (task_name, primary_metric, "default"):
            if key in t:
                return float(t[key])
        return 1.0

    @property
    def label(self) -> str:
        return method_label(self)

    def to_dict(self) -> dict:
        return asdict(self)


def method_label(cfg: MetaTunerConfig | dict | None) -> str:
    """Table label: ``metatuner-I``, ``metatuner-J``, ``metatuner-J/no-param`` ..."""
    if not isinstance(cfg, MetaTunerConfig):
        cfg = MetaTunerConfig.from_dict(cfg)
    label = f"metatuner-{cfg.variant}"
    if cfg.prompt_objective == "gumbel":
        label += "/gumbel"
    if cfg.ablation:
        label += "/" + cfg.ablation.replace("_", "-")
        if cfg.ablation == "no_share" and cfg.no_share_encoder == "embedding":
            label += "-k0"
    if cfg.d2_source != "rollouts":
        label += f"/d2-{cfg.d2_source}"
    if cfg.tag:
        label += f"[{cfg.tag}]"
    return label


def seed_prompt_text(cfg: MetaTunerConfig, template: str) -> str:
    """The hand-written seed prompt p̃ for a task."""
    if cfg.seed_prompt == "template":
        return template.strip()
    if cfg.seed_prompt == "first_paragraph":
        return first_paragraph(template)
    if cfg.seed_prompt == "rules":
        return rules_text(template)
    return cfg.seed_prompt.strip()


def rules_text(template: str, sections: int = 2) -> str:
    """The template up to the end of its ``sections``-th ``## `` section (the first paragraph, then e.g. the
    output format and the conventions)."""
    out, seen = [], 0
    for line in template.strip().splitlines():
        if line.startswith("## "):
            seen += 1
            if seen > sections:
                break
        out.append(line)
    return "\n".join(out).strip()


def first_paragraph(text: str) -> str:
    for para in text.strip().split("\n\n"):
        if para.strip() and not para.lstrip().startswith("#"):
            return para.strip()
    return text.strip()
