"""Answer accuracy for GSM8K and MATH-500.

GSM8K: the final number of a generation (after ``####`` if present, else after "the answer is", else in the
last ``\\boxed{}``, else the last number in the text), with ``$``, ``,`` thousands separators and a trailing
``.`` removed, compared numerically with the reference after ``####`` (``$1,234.00`` == ``1234``).

MATH-500: the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) of the generation, compared with the
reference ``answer`` using the reference implementation of Hendrycks et al. (github.com/hendrycks/math,
``modeling/math_equivalence.py``: ``is_equiv`` = equality after ``_strip_string``), re-implemented here rule for
rule. That normalisation removes spaces, ``\\left``/``\\right``, ``\\!``, degree signs, ``\\$``, ``\\%``, units
written as ``\\text{ ...}``, a short ``x =`` prefix; rewrites ``tfrac``/``dfrac`` to ``frac``, ``\\frac12`` to
``\\frac{1}{2}``, ``\\sqrt2`` to ``\\sqrt{2}``, an integer ``a/b`` to ``\\frac{a}{b}``, a leading ``.5`` to
``0.5``, and the exact string ``0.5`` to ``\\frac{1}{2}``. So, as in the reference, ``\\frac{1}{2}`` equals
``0.5`` and ``1/2`` but ``\\frac{1}{4}`` does NOT equal ``0.25`` and ``2`` does not equal ``2.0``: there is no
numeric or symbolic comparison beyond these string rules.
"""

from __future__ import annotations

import re

from ...task_types import Example
from ..registry import register_metric

# ------------------------------------------------------------------------------------------------ GSM8K
_NUM = r"-?[$]?\s*-?\d[\d,]*(?:\.\d+)?|-?[$]?\s*-?\.\d+"


def _to_number(s: str) -> float | None:
    s = s.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        return float(s)
    except ValueError:
        return None


def extract_gsm8k_answer(text: str) -> str | None:
    """The final numeric answer in a GSM8K-style generation (see module docstring); None if there is none."""
    m = re.search(r"####\s*(" + _NUM + ")", text)
    if m:
        return m.group(1).strip()
    m = re.findall(r"answer is[:\s]*\**\s*(" + _NUM + ")", text, flags=re.I)
    if m:
        return m[-1].strip()
    boxed = last_boxed_content(text)
    if boxed is not None:
        m = re.findall(_NUM, boxed)
        if m:
            return m[-1].strip()
    m = re.findall(_NUM, text)
    return m[-1].strip() if m else None


def gsm8k_equal(pred: str | None, ref: str) -> bool:
    a, b = (_to_number(pred) if pred is not None else None), _to_number(ref)
    return a is not None and b is not None and abs(a - b) < 1e-6 * max(1.0, abs(b))


@register_metric("gsm8k_accuracy")
def gsm8k_accuracy(predictions: list[str], examples: list[Example], **_) -> list[dict]:
    out = []
    for pred, ex in zip(predictions, examples, strict=True):
        ans = extract_gsm8k_answer(pred)
        out.append({"id": ex.id, "accuracy": float(gsm8k_equal(ans, ex.meta["answer"])), "extracted": ans})
    return out


# ------------------------------------------------------------------------------------------------ MATH
def last_boxed_only_string(text: str) -> str | None:
    """The last ``\\boxed{...}`` / ``\\fbox{...}`` (with balanced braces) or ``\\boxed x`` expression."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    if text.startswith("\\boxed ", idx):
        rest = text[idx + len("\\boxed ") :]
        return "\\boxed " + rest.split("$")[0].strip()
    depth, start = 0, None
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
            start = i if start is None else start
        elif text[i] == "}":
            depth -= 1
            if depth == 0 and start is not None:
                return text[idx : i + 1]
    return None


def remove_boxed(s: str | None) -> str | None:
    if s is None:
        return None
    if s.startswith("\\boxed "):
        return s[len("\\boxed ") :]
    for left in ("\\boxed{", "\\fbox{"):
        if s.startswith(left) and s.endswith("}"):
            return s[len(left) : -1]
    return None


def last_boxed_content(text: str) -> str | None:
    return remove_boxed(last_boxed_only_string(text))


def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[:1] == "{":
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b = substr[0], substr[1]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + substr[2:]
        else:
            new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(string: str) -> str:
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        if len(splits) != 2:
            raise ValueError("ambiguous units")
        return splits[0]
    return string


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[:1] != "{":
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    """Hendrycks et al.'s ``_strip_string``: the normalisation applied before comparing MATH answers."""
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _remove_right_units(string)
    string = string.replace("\\%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def is_equiv(str1: str | None, str2: str | None) -> bool:
    """Hendrycks et al.'s ``is_equiv`` (both None counts as equal, as in the reference)."""
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        return strip_string(str1) == strip_string(str2)
    except (ValueError, IndexError):
        return str1 == str2


def math_aggregate(per_sample: list[dict], **_) -> dict[str, float]:
    from .common import grouped_mean, mean_aggregate

    out = mean_aggregate(per_sample)
    out.update(grouped_mean(per_sample, "accuracy", "level"))
    out.update(grouped_mean(per_sample, "accuracy", "subject"))
    return out


@register_metric("math_accuracy", aggregate=math_aggregate)
def math_accuracy(predictions: list[str], examples: list[Example], **_) -> list[dict]:
    out = []
    for pred, ex in zip(predictions, examples, strict=True):
        ans = last_boxed_content(pred)
        out.append(
            {
                "id": ex.id,
                "accuracy": float(ans is not None and is_equiv(ans, ex.meta["answer"])),
                "extracted": ans,
                "level": str(ex.meta.get("level")),
                "subject": ex.meta.get("subject"),
            }
        )
    return out
