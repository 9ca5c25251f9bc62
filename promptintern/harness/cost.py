"""Cost per 1k queries from measured tokens and seconds, priced with a dated price table (a YAML data file).

No price lives in this module: tables are ``harness/prices/<id>.yaml`` (or a folder named by
``$PROMPTINTERN_PRICES_DIR``), each with a retrieval date and the vendor's pricing page, chosen by id.

Two costs per evaluated method:

- **API (what-if)**: the run's prompts and outputs counted with tiktoken (the encoding each API model uses:
  ``o200k_base`` for the gpt-4o family, ``cl100k_base`` for gpt-3.5 / gpt-4) and priced per 1M tokens.
  A fine-tuned method (one with training stages) is priced at the fine-tuned model's rates, an untrained one
  (few-shot, compression at inference) at the base model's. Chat-format overhead tokens of the API (a few per
  message) are not counted.
- **Self-hosted**: each request's own compute (:mod:`promptintern.harness.efficiency`): the engine measurement's request
  throughput at saturation priced at the matching hardware entry's price per second (per GPU, per core x the
  threads the measurement held, or per instance), and at batch 1 the request's own end-to-end seconds; never a
  batch's wall time divided by its size. Training (:func:`training_usd`): every stage's whole work (prompts with
  compression and retrieval, teacher passes, optimizer steps, loading) x the same price.

**Prompt caching** (``usd_per_1k_cached``) follows the vendor's rule as stated in the table's ``api.caching``
mapping (a model may override it in ``api.models.<name>.caching``): the shared prefix of a query is its template
(``sample_api_tokens(...)["template"]``, at most the whole prompt; the retrieved examples differ per query, so they
are never shared), and the tokens billed at the cached price are :func:`cached_prefix_tokens` of it: none below
``min_prefix_tokens``, else ``min_prefix_tokens`` plus whole ``step_tokens`` steps, never more than the prefix
(OpenAI: 0 for a 600- or 1,023-token prefix, 1,024 for 1,024-1,151, 1,280 for 1,300). A model without a cached
price (``cached_input: null``) is never cached. The figure is the steady state: every query finds the prefix in
the cache. The first query of each cache lifetime (the vendor evicts an unused prefix after minutes) is a miss
that pays the full input price and writes the prefix, at ``write_multiplier`` x the input price for the written
tokens (1.0 at OpenAI, which charges no write premium; 1.25 at Anthropic); that one write per cache lifetime is
not in the per-query mean (there is no hit rate here), and the vendor does not guarantee a hit on every query.
The older loose keys ``api.min_cached_prefix_tokens`` / ``cached_prefix_step_tokens`` /
``caching_rule_unverified`` are still read, as that rule with a write multiplier of 1.0.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from promptintern.errors import PromptInternError

PRICES_DIR = Path(__file__).resolve().parent / "prices"
API_TIERS = ("base", "fine_tuned")
PRICE_FIELDS = ("input", "cached_input", "output")
PER_UNITS = ("gpu", "core", "instance")
CACHING_FIELDS = ("min_prefix_tokens", "step_tokens", "write_multiplier", "source", "rule", "unverified")
CACHING_NUMBERS = ("min_prefix_tokens", "step_tokens", "write_multiplier")
# the loose keys of older tables under ``api:``, read as the ``api.caching`` field they name
LEGACY_CACHING_KEYS = {"min_cached_prefix_tokens": "min_prefix_tokens", "cached_prefix_step_tokens": "step_tokens",
                       "caching_rule_unverified": "unverified"}


class PriceTableError(PromptInternError, ValueError):
    """An unknown or malformed price table."""


def prices_dir() -> Path:
    return Path(os.environ.get("PROMPTINTERN_PRICES_DIR") or PRICES_DIR)


def available_tables(directory: Path | None = None) -> list[str]:
    d = directory or prices_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


@dataclass
class HardwarePrice:
    key: str
    device: str
    match: list[str]
    per: str
    usd_per_hour: float
    unverified: bool = False
    raw: dict = field(default_factory=dict, repr=False)

    def matches(self, hardware: dict) -> bool:
        device = "cuda" if (hardware or {}).get("gpu") else "cpu"
        if self.device != device:
            return False
        name = ((hardware or {}).get("gpu") or (hardware or {}).get("cpu") or "").lower()
        return all(m.lower() in name for m in self.match)

    def units(self, hardware: dict) -> float:
        """How many priced units one evaluation occupies: 1 GPU, the torch threads (cores), or 1 instance."""
        if self.per == "core":
            return float((hardware or {}).get("torch_threads") or 1)
        return 1.0

    def usd_per_second(self, hardware: dict) -> float:
        """What a second of the recorded machine costs: the hourly price x the units it held."""
        return self.usd_per_hour * self.units(hardware) / 3600.0


@dataclass
class PriceTable:
    id: str
    title: str
    retrieved: str
    currency: str
    api: dict
    hardware: list[HardwarePrice]
    default: bool = False
    path: Path | None = None
    raw: dict = field(default_factory=dict, repr=False)
    # the validated prompt-caching rule of the table ({} when it states none) and the per-model overrides
    caching: dict = field(default_factory=dict)
    model_caching: dict[str, dict] = field(default_factory=dict)

    @property
    def headline_model(self) -> str | None:
        return self.api.get("headline_model")

    @property
    def api_models(self) -> dict[str, dict]:
        return self.api.get("models") or {}

    def describe(self) -> str:
        return f"{self.id} ({self.title}; retrieved {self.retrieved})"

    def hardware_entry(self, hardware: dict, key: str | None = None) -> HardwarePrice | None:
        """The entry named ``key``, else the first entry matching the recorded hardware, else None."""
        if key:
            for h in self.hardware:
                if h.key == key:
                    return h
            raise PriceTableError(f"price table {self.id!r} has no hardware entry {key!r}; "
                                  f"available: {', '.join(h.key for h in self.hardware)}")
        for h in self.hardware:
            if h.matches(hardware):
                return h
        return None


def _num(x, where: str, *, allow_none: bool = False) -> float | None:
    if x is None and allow_none:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float) or x < 0 or math.isnan(float(x)):
        raise PriceTableError(f"{where}: must be a number >= 0, got {x!r}")
    return float(x)


def _int(x, where: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
        raise PriceTableError(f"{where}: must be an integer >= {minimum}, got {x!r}")
    return x


def _caching_fields(c, where: str) -> dict:
    """The fields of one ``caching`` mapping, each checked (absent fields stay absent)."""
    if not isinstance(c, dict):
        raise PriceTableError(f"{where}: must be a mapping with {', '.join(CACHING_FIELDS)}")
    unknown = sorted(set(c) - set(CACHING_FIELDS))
    if unknown:
        raise PriceTableError(f"{where}.{unknown[0]}: unknown field; the fields are {', '.join(CACHING_FIELDS)}")
    out: dict = {}
    if "min_prefix_tokens" in c:
        out["min_prefix_tokens"] = _int(c["min_prefix_tokens"], f"{where}.min_prefix_tokens", 0)
    if "step_tokens" in c:
        out["step_tokens"] = _int(c["step_tokens"], f"{where}.step_tokens", 1)
    if "write_multiplier" in c:
        out["write_multiplier"] = _num(c["write_multiplier"], f"{where}.write_multiplier")
    for f in ("source", "rule"):
        if f in c:
            if not isinstance(c[f], str) or not c[f].strip():
                raise PriceTableError(f"{where}.{f}: must be a non-empty string, got {c[f]!r}")
            out[f] = c[f].strip()
    if "unverified" in c:
        if not isinstance(c["unverified"], bool):
            raise PriceTableError(f"{where}.unverified: must be true or false, got {c['unverified']!r}")
        out["unverified"] = c["unverified"]
    return out


def _complete_rule(rule: dict, where: str) -> dict:
    """A whole rule: the numbers, a source and the rule in words (write multiplier 1.0 and verified by default)."""
    for f in ("min_prefix_tokens", "step_tokens", "source", "rule"):
        if f not in rule:
            raise PriceTableError(f"{where}.{f}: missing (a caching rule needs min_prefix_tokens, step_tokens, "
                                  "source and rule)")
    return {"min_prefix_tokens": rule["min_prefix_tokens"], "step_tokens": rule["step_tokens"],
            "write_multiplier": rule.get("write_multiplier", 1.0), "source": rule["source"], "rule": rule["rule"],
            "unverified": rule.get("unverified", False)}


def _table_caching(api: dict, name: str) -> dict:
    """The table's caching rule: ``api.caching``, else the older loose keys, else {} (no rule: never cached)."""
    legacy = {k: api[k] for k in LEGACY_CACHING_KEYS if k in api}
    if "caching" in api:
        if legacy:
            raise PriceTableError(f"price table {name}: api.caching and the older api.{next(iter(legacy))} are "
                                  "both set; keep only api.caching")
        return _complete_rule(_caching_fields(api["caching"], f"price table {name}: api.caching"),
                              f"price table {name}: api.caching")
    if not legacy.get("min_cached_prefix_tokens"):  # as before: no minimum stated, no caching
        return {}
    where = f"price table {name}: api"
    minimum = _int(legacy["min_cached_prefix_tokens"], f"{where}.min_cached_prefix_tokens", 0)
    step = legacy.get("cached_prefix_step_tokens") or 1  # as before: no step stated, every token
    step = _int(step, f"{where}.cached_prefix_step_tokens", 1)
    unverified = legacy.get("caching_rule_unverified", True)  # an older table cites no source for its rule
    if not isinstance(unverified, bool):
        raise PriceTableError(f"{where}.caching_rule_unverified: must be true or false, got {unverified!r}")
    return {"min_prefix_tokens": minimum, "step_tokens": step, "write_multiplier": 1.0,
            "source": "not stated (an older price table)", "rule": _rule_words(minimum, step, 1.0),
            "unverified": unverified}


def _model_caching(m: dict, base: dict, where: str) -> dict | None:
    """A model's ``caching`` override, checked; a full rule after merging over the table's."""
    if "caching" not in m or m["caching"] is None:
        return None
    over = _caching_fields(m["caching"], f"{where}.caching")
    if any(f in over for f in CACHING_NUMBERS) and "rule" not in over:
        raise PriceTableError(f"{where}.caching.rule: missing (an override of the numbers states its rule in words)")
    _complete_rule({**base, **over}, f"{where}.caching")
    return over


def parse_table(raw: dict, name: str, path: Path | None = None) -> PriceTable:
    """Validate a price table's structure: a date, sources, numbers where numbers belong."""
    if not isinstance(raw, dict):
        raise PriceTableError(f"price table {name}: top level must be a mapping")
    for key in ("id", "retrieved", "currency", "api", "hardware"):
        if key not in raw:
            raise PriceTableError(f"price table {name}: missing {key!r}")
    if str(raw["id"]) != name:
        raise PriceTableError(f"price table {name}: id {raw['id']!r} must equal the file name {name!r}")
    api = raw["api"]
    if not isinstance(api, dict) or not isinstance(api.get("models"), dict) or not api.get("source"):
        raise PriceTableError(f"price table {name}: api needs a source and a models mapping")
    caching = _table_caching(api, name)
    model_caching = {}
    for model, m in api["models"].items():
        where = f"price table {name}: api.models.{model}"
        if not isinstance(m, dict):
            raise PriceTableError(f"{where}: must be a mapping")
        over = _model_caching(m, caching, where)
        if over is not None:
            model_caching[model] = over
        if m.get("encoding") not in ("cl100k_base", "o200k_base"):
            raise PriceTableError(f"{where}.encoding: must be cl100k_base or o200k_base")
        for tier in API_TIERS:
            if tier in m and m[tier] is not None:
                for f in PRICE_FIELDS:
                    _num(m[tier].get(f), f"{where}.{tier}.{f}", allow_none=(f == "cached_input"))
    hw = raw["hardware"]
    if not isinstance(hw, dict) or not hw.get("source") or not isinstance(hw.get("entries"), list):
        raise PriceTableError(f"price table {name}: hardware needs a source and a list of entries")
    entries = []
    for i, e in enumerate(hw["entries"]):
        where = f"price table {name}: hardware.entries[{i}]"
        if not isinstance(e, dict) or not e.get("key") or e.get("device") not in ("cuda", "cpu"):
            raise PriceTableError(f"{where}: needs a key and device (cuda or cpu)")
        if e.get("per") not in PER_UNITS:
            raise PriceTableError(f"{where}.per: must be one of {', '.join(PER_UNITS)}")
        if "usd_per_hour" in e:
            hourly = _num(e["usd_per_hour"], f"{where}.usd_per_hour")
        elif "usd_per_second" in e:
            hourly = _num(e["usd_per_second"], f"{where}.usd_per_second") * 3600.0
        else:
            raise PriceTableError(f"{where}: needs usd_per_hour or usd_per_second")
        entries.append(HardwarePrice(key=str(e["key"]), device=e["device"], match=[str(m) for m in e.get("match") or []],
                                     per=e["per"], usd_per_hour=hourly, unverified=bool(e.get("unverified")), raw=e))
    return PriceTable(id=name, title=str(raw.get("title", name)), retrieved=str(raw["retrieved"]),
                      currency=str(raw["currency"]), api=api, hardware=entries, default=bool(raw.get("default")),
                      path=path, raw=raw, caching=caching, model_caching=model_caching)


def load_price_table(name: str | None = None, directory: Path | None = None) -> PriceTable:
    """A price table by id (the file stem); None -> the one marked ``default: true``."""
    d = directory or prices_dir()
    names = available_tables(d)
    if name is None:
        defaults = [n for n in names if (yaml.safe_load((d / f"{n}.yaml").read_text()) or {}).get("default")]
        if len(defaults) != 1:
            raise PriceTableError(f"no single default price table in {d} (found {defaults or 'none'}); "
                                  f"name one with --price-table: {', '.join(names) or 'none available'}")
        name = defaults[0]
    if name not in names:
        raise PriceTableError(f"unknown price table {name!r}; available: {', '.join(names) or 'none'} (in {d})")
    path = d / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PriceTableError(f"price table {name}: invalid YAML: {e}") from None
    return parse_table(raw, name, path)


# -- arithmetic ------------------------------------------------------------------------------------------------

def api_cost_per_query(input_tokens: float, output_tokens: float, prices: dict, cached_tokens: float = 0.0) -> float:
    """USD for one query: (uncached input x input + cached x cached_input + output x output) / 1e6."""
    cached_price = prices.get("cached_input")
    if cached_price is None:
        cached_tokens = 0.0
        cached_price = 0.0
    uncached = max(0.0, input_tokens - cached_tokens)
    return (uncached * prices["input"] + cached_tokens * cached_price + output_tokens * prices["output"]) / 1e6


def cached_prefix_tokens(prefix_tokens: float, rule: dict) -> float:
    """Tokens of a shared prefix billed at the cached price under ``rule`` (a :func:`caching_rule`): 0 below
    ``min_prefix_tokens``, else ``min_prefix_tokens + floor((prefix - min_prefix_tokens) / step_tokens) x
    step_tokens``, never more than the prefix. No rule ({}): 0."""
    if not rule or rule.get("min_prefix_tokens") is None:
        return 0.0
    minimum = rule["min_prefix_tokens"]
    step = rule.get("step_tokens") or 1
    if not prefix_tokens > 0 or prefix_tokens < minimum:  # also NaN
        return 0.0
    return float(min(prefix_tokens, minimum + math.floor((prefix_tokens - minimum) / step) * step))


def caching_rule(table: PriceTable, model: str) -> dict:
    """The caching rule that applies to ``model``: its ``api.models.<model>.caching`` over the table's
    ``api.caching`` (a copy; {} when the table states no rule)."""
    over = table.model_caching.get(model) or {}
    if not table.caching and not over:
        return {}
    return {**table.caching, **over}


def _rule_words(minimum: int, step: int, write_multiplier: float) -> str:
    words = f"cached input billed only on a shared prefix of >= {minimum:,} tokens"
    if step > 1:
        words += f", in steps of {step:,}"
    if write_multiplier != 1.0:
        words += f", cache writes at {write_multiplier:g}x the input price"
    return words


def _has_cached_price(m: dict) -> tuple[bool, list[str]]:
    """(any priced tier has a cached-input price, the priced tiers that have none)."""
    tiers = [t for t in API_TIERS if m.get(t)]
    without = [t for t in tiers if m[t].get("cached_input") is None]
    return len(without) < len(tiers), without


def caching_rule_text(table: PriceTable) -> str:
    """One line for reports: per group of API models, the caching rule that prices their cached input (with its
    source, and whether it is unverified), or that they are never cached (no cached-input price)."""
    groups: dict[str, list[str]] = {}
    for model, m in table.api_models.items():
        cached, without = _has_cached_price(m)
        rule = caching_rule(table, model)
        if not cached:
            text = "never cached (no cached-input price)"
        elif not rule:
            text = "never cached (the price table states no caching rule)"
        else:
            text = _rule_words(rule["min_prefix_tokens"], rule["step_tokens"], rule["write_multiplier"])
            if without:
                text += f" ({' and '.join(t.replace('_', '-') for t in without)} prices: never cached)"
            text += f" (source: {rule['source']}{'; unverified' if rule['unverified'] else ''})"
        groups.setdefault(text, []).append(model)
    parts = [f"{', '.join(models)}: {text}" for text, models in groups.items()]
    return "; ".join(parts) + "." if parts else "No API models."


def mean_or_nan(xs) -> float:
    """Mean of the values that are not None; NaN when there are none."""
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def sample_api_tokens(sample: dict, encoding: str) -> dict:
    """Input, output and template tokens of one sample in one tiktoken encoding (output counted on demand). A
    MetaTuner sample's generator call is paid on every query too: its input and output tokens are added."""
    out = (sample.get("output_tokens_tiktoken") or {}).get(encoding)
    if out is None:
        from promptintern.tokens import TiktokenCounter

        out = TiktokenCounter(encoding).count(sample.get("generation") or "")
    parts = (sample.get("parts_tiktoken") or {}).get(encoding) or {}
    g = sample.get("generator_tokens") or {}
    return {"input": sample["tokens"][encoding] + (g.get(encoding) or 0),
            "output": out + ((g.get("output_tiktoken") or {}).get(encoding) or 0),
            "template": parts.get("template", 0)}


def is_trained(rec: dict) -> bool:
    """A fine-tuned model answers (fine-tuned API prices): trained in this grid, or an existing adapter."""
    return bool(rec["config"].get("train_task")) or (rec["config"].get("method") or {}).get("name") == "adapter"


def record_costs(rec: dict, table: PriceTable) -> dict:
    """API cost per 1k queries of one eval record for every API model of the table: uncached, and cached under the
    table's caching rule (``cached_tokens``: the mean tokens per query billed at the cached price; ``caching_rule``:
    the rule applied). The self-hosted cost is :mod:`promptintern.harness.efficiency`'s."""
    samples = rec.get("samples") or []
    tier = "fine_tuned" if is_trained(rec) else "base"
    api: dict[str, dict] = {}
    for model, m in table.api_models.items():
        prices = m.get(tier)
        rule = caching_rule(table, model)
        if not prices or not samples:
            api[model] = {"tier": tier, "usd_per_1k": float("nan"), "usd_per_1k_cached": float("nan"),
                          "input_tokens": float("nan"), "output_tokens": float("nan"),
                          "cached_tokens": float("nan"), "caching_rule": rule}
            continue
        toks = [sample_api_tokens(s, m["encoding"]) for s in samples]
        # the shared prefix is the template, at most the whole prompt; no cached price: nothing billed as cached.
        # Compression at inference rewrites template + examples per query: no prefix is shared between queries.
        shared = not rec["config"].get("test_compressed")
        cached = [cached_prefix_tokens(min(t["template"], t["input"]), rule)
                  if shared and prices.get("cached_input") is not None else 0.0 for t in toks]
        per_q = [api_cost_per_query(t["input"], t["output"], prices) for t in toks]
        per_q_cached = [api_cost_per_query(t["input"], t["output"], prices, c)
                        for t, c in zip(toks, cached, strict=True)]
        api[model] = {
            "tier": tier,
            "encoding": m["encoding"],
            "input_tokens": mean_or_nan(t["input"] for t in toks),
            "output_tokens": mean_or_nan(t["output"] for t in toks),
            "usd_per_1k": 1000.0 * mean_or_nan(per_q),
            "usd_per_1k_cached": 1000.0 * mean_or_nan(per_q_cached),
            "cached_tokens": mean_or_nan(cached),
            "caching_rule": rule,
        }
    return {"price_table": table.id, "api": api}


def training_usd(stage_records: list[dict], table: PriceTable, hardware_key: str | None = None) -> float:
    """One-time self-hosted training cost: each stage's whole work (``work_seconds.total``; older records: the
    training seconds) x its hardware's price per second (NaN if unpriced)."""
    total = 0.0
    for s in stage_records:
        hw = s.get("hardware") or {}
        entry = table.hardware_entry(hw, hardware_key)
        secs = (s.get("work_seconds") or {}).get("total") or (s.get("train") or {}).get("seconds")
        if entry is None or secs is None:
            return float("nan")
        total += secs * entry.usd_per_second(hw)
    return total
