"""Generic metrics for user-defined (YAML-only) tasks: each is chosen by name in the YAML, and reads what it needs
beyond ``reference`` from the example's ``meta`` under a field named by an argument.

==========================  ==============================================  ====================================
metric                      arguments (defaults)                            per-sample keys
==========================  ==============================================  ====================================
``normalized_exact_match``  lowercase=True, strip_punctuation=True,         exact_match
                            strip_articles=False
``bleu``                    tokenize="13a", lowercase=False                 bleu (0-100); aggregate + corpus_bleu
``chrf``                    char_order=6, word_order=0 (2: chrF++)          chrf (0-100); aggregate + corpus_chrf
``rouge_l``                 use_stemmer=False                               rouge_l (F-measure, 0-1)
``choice``                  choices_field="choices",                        accuracy, extracted (index or None)
                            reference_index_base=0
``numeric``                 which="last", rel_tol=0.0, abs_tol=1e-9,        accuracy, extracted (float or None)
                            reference_field=None
``regex``                   pattern (required), ignore_case=False,          exact_match, extracted (str or None)
                            reference_pattern=False (+ the normalisation
                            arguments of normalized_exact_match)
``json_match``              fields=None                                     valid_json, exact_match
                                                                            (+ field_match with fields)
``code_tests``              tests_field="tests", setup_field=None,          pass@1, status, failure, exec_s
                            workers=None, + promptintern.tasks.sandbox.Limits fields
==========================  ==============================================  ====================================

Every record also has ``id``. The aggregate is the mean of every numeric field plus ``n`` (BLEU and chrF add the
corpus-level score, computed with the same arguments). Details:

* Normalisation (``normalized_exact_match``, ``regex``) follows SQuAD's ``normalize_answer``, each step optional:
  lower-case; delete punctuation (ASCII ``string.punctuation`` and Unicode punctuation, deleted rather than
  replaced, so ``don't`` -> ``dont``); delete the English articles a / an / the as whole words (any case); always
  collapse whitespace.
* ``bleu`` / ``chrf`` are sacrebleu's ``sentence_bleu`` / ``sentence_chrf`` per sample and ``corpus_bleu`` /
  ``corpus_chrf`` over the run (one reference per sample). An empty hypothesis or reference scores 0.
* ``rouge_l`` is Google's ``rouge_score`` (the tokenizer lower-cases and keeps only ``[a-z0-9]`` runs, so text
  without ASCII letters or digits scores 0).
* ``choice``: ``meta[choices_field]`` is the list of options. The answer is the exact text of an option
  (case and whitespace ignored), else what :func:`extract_choice` finds (a letter ``B`` / ``(B)`` /
  ``Answer: B``, else an option number 1..n, 1-based as printed to users). The gold ``reference`` is the text
  of an option (this wins: with options ``["1", "2"]`` a reference ``"2"`` is the second option), else a letter,
  else an index (``reference_index_base``: 0 when ``"2"`` means the third option, 1 when it means the second);
  a reference that is none of these raises :class:`ConfigError`.
* ``numeric``: numbers are ``-1,234.5``, ``$12``, ``50%``, ``.5``, ``1e-3``; a comma counts only as a thousands
  separator (``1,234`` is 1234; ``1,2`` is 1 and 2); ``$`` and ``%`` are dropped (``50%`` is 50, not 0.5). The
  answer's first or last number (``which``) is compared with ``math.isclose(rel_tol, abs_tol)`` to the
  reference's last number (or to ``meta[reference_field]``: a number, or text read the same way).
* ``regex``: the first match of ``pattern`` in the answer; its group 1 if the pattern has groups (the first
  group that took part in the match, for alternations), else the whole match. With ``reference_pattern`` the
  reference is read the same way (taken whole if the pattern does not match it).
* ``json_match``: the answer is parsed as JSON after removing a ```` ```json ```` (or bare ```` ``` ````) fence;
  the reference is parsed as JSON (a reference that is not JSON raises :class:`ConfigError`). Values compare as
  JSON values: ``true`` differs from ``1``, ``1`` equals ``1.0``. With ``fields`` (top-level keys),
  ``field_match`` is the fraction of those keys whose values equal the reference's (the reference must be an
  object; a key absent from both counts as equal; an answer that is not an object matches none) and
  ``exact_match`` is 1 when all do; without ``fields``, ``exact_match`` compares the whole values.
* ``code_tests``: program = answer + blank line + ``meta[setup_field]`` (if given and present) + ``meta[tests_field]``
  (a list of assert statements or one string of code), run in :mod:`promptintern.tasks.sandbox` as the MBPP metric runs
  them; the remaining arguments are :class:`promptintern.tasks.sandbox.Limits` fields (``timeout_s``, ``memory_mb``, ...).
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata

from promptintern.errors import ConfigError

from ...task_types import Example
from ..registry import register_metric
from ..sandbox import Program, run_many
from .choice_sql_formula import LETTERS, extract_choice
from .code_exec import _limits, _records
from .common import mean_aggregate
from .math_answers import _to_number


# --------------------------------------------------------------------------------------------- normalisation
def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)


def normalize_answer(text: str, lowercase: bool = True, strip_punctuation: bool = True,
                     strip_articles: bool = False) -> str:  # fmt: skip
    """SQuAD-style normalisation (see the module docstring); whitespace is always collapsed."""
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        text = "".join(ch for ch in text if not _is_punct(ch))
    if strip_articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


@register_metric("normalized_exact_match")
def normalized_exact_match(answers: list[str], examples: list[Example], lowercase: bool = True,
                           strip_punctuation: bool = True, strip_articles: bool = False, **_) -> list[dict]:  # fmt: skip
    """exact_match after :func:`normalize_answer` of both the answer and the reference."""
    norm = {"lowercase": lowercase, "strip_punctuation": strip_punctuation, "strip_articles": strip_articles}
    return [
        {
            "id": ex.id,
            "exact_match": float(normalize_answer(a, **norm) == normalize_answer(ex.reference, **norm)),
        }
        for a, ex in zip(answers, examples, strict=True)
    ]


# --------------------------------------------------------------------------------------------- BLEU / chrF
def _strip_texts(per_sample: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("prediction", "reference")} for r in per_sample]


def _bleu_metric(tokenize: str, lowercase: bool):
    from sacrebleu.metrics import BLEU

    try:
        return BLEU(tokenize=tokenize, lowercase=bool(lowercase))
    except KeyError:
        raise ConfigError("metric.args.tokenize", f"unknown sacrebleu tokenizer {tokenize!r}; "
                          f"choose one of {sorted(BLEU.TOKENIZERS)}") from None  # fmt: skip


def _corpus_aggregate(per_sample: list[dict], key: str, corpus_score) -> dict[str, float]:
    """The per-sample means, and ``key``: ``corpus_score(predictions, references)`` over every sample."""
    out = mean_aggregate(_strip_texts(per_sample))
    if per_sample:
        out[key] = corpus_score([r["prediction"] for r in per_sample], [r["reference"] for r in per_sample])
    return out


def generic_bleu_aggregate(per_sample: list[dict], tokenize: str = "13a", lowercase: bool = False,
                           **_) -> dict[str, float]:  # fmt: skip
    import sacrebleu

    _bleu_metric(tokenize, lowercase)
    return _corpus_aggregate(per_sample, "corpus_bleu", lambda hyps, refs: sacrebleu.corpus_bleu(
        hyps, [refs], tokenize=tokenize, lowercase=bool(lowercase)).score)


@register_metric("bleu", aggregate=generic_bleu_aggregate)
def bleu(answers: list[str], examples: list[Example], tokenize: str = "13a", lowercase: bool = False,
         **_) -> list[dict]:  # fmt: skip
    """sacrebleu sentence BLEU (0-100) per sample; the aggregate adds corpus BLEU."""
    import sacrebleu

    _bleu_metric(tokenize, lowercase)
    return [
        {
            "id": ex.id,
            "bleu": sacrebleu.sentence_bleu(
                a, [ex.reference], tokenize=tokenize, lowercase=bool(lowercase)
            ).score,
            "prediction": a,
            "reference": ex.reference,
        }
        for a, ex in zip(answers, examples, strict=True)
    ]


def _check_chrf_args(char_order, word_order) -> None:
    if isinstance(char_order, bool) or not isinstance(char_order, int) or char_order < 1:
        raise ConfigError("metric.args.char_order", f"should be a positive integer, not {char_order!r}")
    if isinstance(word_order, bool) or not isinstance(word_order, int) or word_order < 0:
        raise ConfigError("metric.args.word_order", f"should be an integer >= 0, not {word_order!r}")


def generic_chrf_aggregate(per_sample: list[dict], char_order: int = 6, word_order: int = 0,
                           **_) -> dict[str, float]:  # fmt: skip
    import sacrebleu

    _check_chrf_args(char_order, word_order)
    return _corpus_aggregate(per_sample, "corpus_chrf", lambda hyps, refs: sacrebleu.corpus_chrf(
        hyps, [refs], char_order=char_order, word_order=word_order).score)


@register_metric("chrf", aggregate=generic_chrf_aggregate)
def chrf(answers: list[str], examples: list[Example], char_order: int = 6, word_order: int = 0,
         **_) -> list[dict]:  # fmt: skip
    """sacrebleu sentence chrF (0-100; ``word_order=2`` is chrF++) per sample; the aggregate adds corpus chrF."""
    import sacrebleu

    _check_chrf_args(char_order, word_order)
    return [
        {
            "id": ex.id,
            "chrf": sacrebleu.sentence_chrf(
                a, [ex.reference], char_order=char_order, word_order=word_order
            ).score,
            "prediction": a,
            "reference": ex.reference,
        }
        for a, ex in zip(answers, examples, strict=True)
    ]


# --------------------------------------------------------------------------------------------- ROUGE-L
@register_metric("rouge_l")
def rouge_l(answers: list[str], examples: list[Example], use_stemmer: bool = False, **_) -> list[dict]:
    """rouge_score's ROUGE-L F-measure (0-1) of the answer against the reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=bool(use_stemmer))
    return [
        {"id": ex.id, "rouge_l": float(scorer.score(ex.reference, a)["rougeL"].fmeasure)}
        for a, ex in zip(answers, examples, strict=True)
    ]


# --------------------------------------------------------------------------------------------- choice
def _norm_choice(text: str) -> str:
    return " ".join(str(text).lower().split())


def _meta_field(ex: Example, field: str, arg: str):
    if field not in ex.meta:
        raise ConfigError(f"metric.args.{arg}", f"example {ex.id!r} has no meta field {field!r} "
                          f"(its meta fields: {sorted(ex.meta)})")  # fmt: skip
    return ex.meta[field]


def _gold_choice(ref, choices: list[str], index_base: int) -> int | None:
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        idx = ref - index_base
        return idx if 0 <= idx < len(choices) else None
    norm = _norm_choice(ref)
    for i, c in enumerate(choices):
        if norm == _norm_choice(c):
            return i
    t = str(ref).strip().strip("()").strip()
    if len(t) == 1 and t.upper() in LETTERS[: len(choices)]:
        return LETTERS.index(t.upper())
    if re.fullmatch(r"\d+", t):
        idx = int(t) - index_base
        return idx if 0 <= idx < len(choices) else None
    return None


@register_metric("choice")
def choice(answers: list[str], examples: list[Example], choices_field: str = "choices",
           reference_index_base: int = 0, **_) -> list[dict]:  # fmt: skip
    """accuracy of the option chosen in the answer against the reference option (see the module docstring)."""
    out = []
    for a, ex in zip(answers, examples, strict=True):
        choices = _meta_field(ex, choices_field, "choices_field")
        if not isinstance(choices, list | tuple) or not choices:
            raise ConfigError("metric.args.choices_field", f"example {ex.id!r}: meta[{choices_field!r}] should be a "
                              f"non-empty list, not {type(choices).__name__}")  # fmt: skip
        choices = [str(c) for c in choices]
        gold = _gold_choice(ex.reference, choices, reference_index_base)
        if gold is None:
            raise ConfigError("metric", f"choice: example {ex.id!r}: reference {ex.reference!r} is neither one of "
                              f"its {len(choices)} choices, a letter, nor an index")  # fmt: skip
        norm = _norm_choice(a)
        idx = next((i for i, c in enumerate(choices) if norm and norm == _norm_choice(c)), None)
        if idx is None:
            # extract_choice's number pattern is one digit: letters cover up to 8 options, numbers up to 9
            idx = extract_choice(a, min(len(choices), 9), choices)
        out.append({"id": ex.id, "accuracy": float(idx == gold), "extracted": idx})
    return out


# --------------------------------------------------------------------------------------------- numeric
# an optional minus (not after a word character or a hyphen: "3-5" is 3 and 5), an optional "$", then digits with
# comma thousands groups (or plain digits), an optional fraction and exponent; or a bare fraction (".5")
NUMBER_RE = re.compile(
    r"(?:(?<![\w\-])-\s?)?\$?\s?"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?"
)


def extract_number(text: str, which: str = "last") -> float | None:
    """The first or last number in ``text`` (see the module docstring), as a float; None if there is none."""
    found = NUMBER_RE.findall(text)
    if not found:
        return None
    return _to_number(found[0] if which == "first" else found[-1])


def _reference_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return extract_number(str(value), "last")


@register_metric("numeric")
def numeric(answers: list[str], examples: list[Example], which: str = "last", rel_tol: float = 0.0,
            abs_tol: float = 1e-9, reference_field: str | None = None, **_) -> list[dict]:  # fmt: skip
    """accuracy: the answer's first/last number is close to the reference's number (see the module docstring)."""
    if which not in ("first", "last"):
        raise ConfigError("metric.args.which", f"should be 'first' or 'last', not {which!r}")
    out = []
    for a, ex in zip(answers, examples, strict=True):
        ref_value = (
            ex.reference if reference_field is None else _meta_field(ex, reference_field, "reference_field")
        )
        ref = _reference_number(ref_value)
        if ref is None:
            where = "reference" if reference_field is None else f"meta[{reference_field!r}]"
            raise ConfigError("metric", f"numeric: example {ex.id!r}: no number in its {where} {ref_value!r}")
        got = extract_number(a, which)
        ok = got is not None and math.isclose(got, ref, rel_tol=float(rel_tol), abs_tol=float(abs_tol))
        out.append({"id": ex.id, "accuracy": float(ok), "extracted": got})
    return out


# --------------------------------------------------------------------------------------------- regex
def _regex_extract(pattern: re.Pattern, text: str) -> str | None:
    m = pattern.search(text)
    if m is None:
        return None
    if pattern.groups == 0:
        return m.group(0)
    if m.group(1) is not None:
        return m.group(1)
    return next((g for g in m.groups() if g is not None), None)


@register_metric("regex")
def regex(answers: list[str], examples: list[Example], pattern: str | None = None, ignore_case: bool = False,
          reference_pattern: bool = False, lowercase: bool = True, strip_punctuation: bool = True,
          strip_articles: bool = False, **_) -> list[dict]:  # fmt: skip
    """exact_match of what ``pattern`` extracts from the answer against the (normalised) reference."""
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(
            "metric.args.pattern", "the regex metric needs a pattern (a Python regular expression)"
        )
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ConfigError("metric.args.pattern", f"invalid regular expression {pattern!r}: {exc}") from None
    norm = {"lowercase": lowercase, "strip_punctuation": strip_punctuation, "strip_articles": strip_articles}
    out = []
    for a, ex in zip(answers, examples, strict=True):
        got = _regex_extract(compiled, a)
        ref = ex.reference
        if reference_pattern:
            ref_got = _regex_extract(compiled, ref)
            ref = ref if ref_got is None else ref_got
        ok = got is not None and normalize_answer(got, **norm) == normalize_answer(ref, **norm)
        out.append({"id": ex.id, "exact_match": float(ok), "extracted": got})
    return out


# --------------------------------------------------------------------------------------------- JSON
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_MISSING = object()


def parse_json_answer(text: str):
    """``(True, value)`` for JSON text (inside a ```` ```json ```` fence if there is one), else ``(False, None)``."""
    m = _FENCE.search(text)
    body = m.group(1) if m else text
    try:
        return True, json.loads(body.strip())
    except (ValueError, RecursionError):
        return False, None


def json_equal(a, b) -> bool:
    """Equality of JSON values: booleans are not numbers (``true != 1``), ``1 == 1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b  # strings, null, and the missing-key marker (equal only to itself)


@register_metric("json_match")
def json_match(answers: list[str], examples: list[Example], fields: list[str] | str | None = None,
               **_) -> list[dict]:  # fmt: skip
    """valid_json, exact_match (whole value, or all ``fields``) and field_match (fraction of ``fields``)."""
    if isinstance(fields, str):
        fields = [fields]
    if fields is not None and (not isinstance(fields, list | tuple) or not fields
                               or not all(isinstance(f, str) for f in fields)):  # fmt: skip
        raise ConfigError("metric.args.fields", f"should be a non-empty list of key names, not {fields!r}")
    out = []
    for a, ex in zip(answers, examples, strict=True):
        ok_ref, ref = parse_json_answer(ex.reference)
        if not ok_ref:
            raise ConfigError("metric", f"json_match: example {ex.id!r}: its reference is not JSON: "
                              f"{ex.reference[:200]!r}")  # fmt: skip
        valid, got = parse_json_answer(a)
        rec = {"id": ex.id, "valid_json": float(valid)}
        if fields is None:
            rec["exact_match"] = float(valid and json_equal(got, ref))
        else:
            if not isinstance(ref, dict):
                raise ConfigError("metric.args.fields", f"example {ex.id!r}: the reference is not a JSON object, "
                                  "so it has no fields to compare")  # fmt: skip
            got_d = got if valid and isinstance(got, dict) else None
            same = (
                0
                if got_d is None
                else sum(json_equal(got_d.get(f, _MISSING), ref.get(f, _MISSING)) for f in fields)
            )
            rec["field_match"] = same / len(fields)
            rec["exact_match"] = float(same == len(fields))
        out.append(rec)
    return out


# --------------------------------------------------------------------------------------------- code tests
def _code_part(ex: Example, field: str, arg: str) -> str:
    value = _meta_field(ex, field, arg)
    if isinstance(value, list | tuple):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"metric.args.{arg}", f"example {ex.id!r}: meta[{field!r}] should hold strings")
        return "\n".join(value)
    if isinstance(value, str):
        return value
    raise ConfigError(f"metric.args.{arg}", f"example {ex.id!r}: meta[{field!r}] should be a string or a list of "
                      f"strings, not {type(value).__name__}")  # fmt: skip


def code_tests_program(
    answer: str, ex: Example, tests_field: str = "tests", setup_field: str | None = None
) -> Program:
    tests = _code_part(ex, tests_field, "tests_field")
    if not tests.strip():
        raise ConfigError(
            "metric.args.tests_field", f"example {ex.id!r} has no tests in meta[{tests_field!r}]"
        )
    # setup code is optional per example (MBPP's test_setup_code is mostly empty): absent or null means none
    setup = _code_part(ex, setup_field, "setup_field") if setup_field and ex.meta.get(setup_field) else ""
    # the answer runs apart from its tests (the sandbox's verifier runs them), so it cannot forge the verdict
    return Program(code=f"{answer}\n", tests=f"{setup}\n{tests}\n" if setup else f"{tests}\n")


@register_metric("code_tests", executes_code=True)
def code_tests(answers: list[str], examples: list[Example], tests_field: str = "tests",
               setup_field: str | None = None, workers: int | None = None, **limit_args) -> list[dict]:  # fmt: skip
    """pass@1: the answer followed by the example's tests, run in the sandbox (see the module docstring)."""
    programs = [
        code_tests_program(a, ex, tests_field, setup_field) for a, ex in zip(answers, examples, strict=True)
    ]
    meta = [{"id": ex.id} for ex in examples]
    return _records(run_many(programs, _limits(limit_args), workers=workers), meta)
