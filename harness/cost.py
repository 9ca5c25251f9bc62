"""Cost per 1k queries from measured tokens and seconds, priced with a dated price table (a YAML data file).

No price lives in this module: tables are ``harness/prices/<id>.yaml`` (or a folder named by
``$PROMPTINTERN_PRICES_DIR``), each with a retrieval date and the vendor's pricing page, chosen by id.

Two costs per evaluated method:

- **API (what-if)**: the run's prompts and outputs counted with tiktoken (the encoding each API model uses:
  ``o200k_base`` for the gpt-4o family, ``cl100k_base`` for gpt-3.5 / gpt-4) and priced per 1M tokens.
  A fine-tuned method (one with training stages) is priced at the fine-tuned model's rates, an untrained one
  (few-shot, compression at inference) at the base model's. ``cached`` is the best case where every query hits the
  prompt cache for the shared template prefix (the examples are retrieved per query, so they are never shared).
  Chat-format overhead tokens of the API (a few per message) are not counted.
- **Self-hosted**: measured generation seconds per query (the main batched run: total generation wall time / n,
  plus compressor seconds for compression at inference) x the hourly price of the matching hardware entry.
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
    for model, m in api["models"].items():
        where = f"price table {name}: api.models.{model}"
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
                      path=path, raw=raw)


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


def cacheable_tokens(template_tokens: float, total_tokens: float, api: dict) -> float:
    """Tokens of the shared template prefix billed at the cached rate in the best case (every query a cache hit)."""
    minimum = api.get("min_cached_prefix_tokens")
    step = api.get("cached_prefix_step_tokens") or 1
    if not minimum or total_tokens < minimum or template_tokens <= 0:
        return 0.0
    return float(math.floor(template_tokens / step) * step)


def self_hosted_usd_per_query(seconds_per_query: float, entry: HardwarePrice, hardware: dict) -> float:
    return seconds_per_query * entry.usd_per_hour * entry.units(hardware) / 3600.0


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


def seconds_per_query(rec: dict) -> float:
    """Measured generation seconds per query in the main run (+ the compressor's seconds when it ran at test time)."""
    eff = rec["efficiency"]
    n = eff.get("n") or len(rec.get("samples") or [])
    if not n or not eff.get("generation_seconds"):
        return float("nan")
    return (eff["generation_seconds"] + (eff.get("compressor_seconds") or 0.0)) / n


def record_costs(rec: dict, table: PriceTable, hardware_key: str | None = None) -> dict:
    """Cost per 1k queries of one eval record: every API model (uncached and best-case cached) and self-hosted."""
    samples = rec.get("samples") or []
    tier = "fine_tuned" if is_trained(rec) else "base"
    api: dict[str, dict] = {}
    for model, m in table.api_models.items():
        prices = m.get(tier)
        if not prices or not samples:
            api[model] = {"tier": tier, "usd_per_1k": float("nan"), "usd_per_1k_cached": float("nan"),
                          "input_tokens": float("nan"), "output_tokens": float("nan")}
            continue
        toks = [sample_api_tokens(s, m["encoding"]) for s in samples]
        per_q = [api_cost_per_query(t["input"], t["output"], prices) for t in toks]
        per_q_cached = [api_cost_per_query(t["input"], t["output"], prices,
                                           cacheable_tokens(t["template"], t["input"], table.api)) for t in toks]
        api[model] = {
            "tier": tier,
            "encoding": m["encoding"],
            "input_tokens": mean_or_nan(t["input"] for t in toks),
            "output_tokens": mean_or_nan(t["output"] for t in toks),
            "usd_per_1k": 1000.0 * mean_or_nan(per_q),
            "usd_per_1k_cached": 1000.0 * mean_or_nan(per_q_cached),
        }
    hw = rec.get("hardware") or {}
    entry = table.hardware_entry(hw, hardware_key)
    spq = seconds_per_query(rec)
    self_hosted = {
        "hardware_key": entry.key if entry else None,
        "usd_per_hour": entry.usd_per_hour if entry else float("nan"),
        "units": entry.units(hw) if entry else float("nan"),
        "per": entry.per if entry else None,
        "seconds_per_query": spq,
        "usd_per_1k": 1000.0 * self_hosted_usd_per_query(spq, entry, hw) if entry else float("nan"),
        "unverified": entry.unverified if entry else None,
    }
    return {"price_table": table.id, "api": api, "self_hosted": self_hosted}


def training_usd(stage_records: list[dict], table: PriceTable, hardware_key: str | None = None) -> float:
    """One-time self-hosted training cost: measured seconds of each stage x its hardware's price (NaN if unpriced)."""
    total = 0.0
    for s in stage_records:
        hw = s.get("hardware") or {}
        entry = table.hardware_entry(hw, hardware_key)
        secs = (s.get("train") or {}).get("seconds")
        if entry is None or secs is None:
            return float("nan")
        total += self_hosted_usd_per_query(secs, entry, hw)
    return total
