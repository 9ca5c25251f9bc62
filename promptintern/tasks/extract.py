"""Answer extraction: from a generation (already cut at its stop string) to the answer a metric scores.

A task YAML names its extractor (``extract: {name: code, args: {...}}``; default ``raw``). Each extractor returns
an :class:`Extracted`: the answer, how it was found (``how``) and, when no usable answer was found, why
(``failure``). Every evaluation sample stores the raw generation, the answer and this account, so a score of 0
can be told apart from an answer that was never there.

- ``raw``: the text, stripped (metrics that parse a number or a letter themselves).
- ``code``: the content of a fenced block when there is one (the block defining the tested function, named by
  the example's ``meta[entry_meta]``, else the first block in a preferred language, else the first block); the
  text before the first fence when that is the code that defines the function (bare code followed by a stray
  closing fence); otherwise the raw text. ``continuation: true`` (HumanEval) accepts a function body that
  continues the prompt instead of defining the function.
- ``command`` (NL2Bash), ``sql`` (Spider), ``formula`` (NL2Formula): the fenced block if any, else the text; then
  the first non-empty line (command: the first that is not a ``#`` comment or shebang; formula) or the text up to
  the first ``;`` or blank line (SQL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..task_types import Example
from .registry import register_extractor

_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*(?:\n|\Z)", re.M)
_CLOSE = re.compile(r"^[ \t]*```[ \t]*$", re.M)


@dataclass(frozen=True)
class Extracted:
    answer: str
    how: str  # e.g. "fenced block (python)", "raw text"
    failure: str | None = None  # why no usable answer was found (None: found one)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    closed: bool
    start: int  # offset of the opening fence in the text


def fenced_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` in order; an unclosed final fence runs to the end of the text."""
    out, pos = [], 0
    while True:
        m = _FENCE.search(text, pos)
        if m is None:
            return out
        end = _CLOSE.search(text, m.end())
        body = text[m.end() : end.start() if end else len(text)]
        out.append(Block(m.group(1).lower(), body.rstrip("\n"), end is not None, m.start()))
        if end is None:
            return out
        pos = end.end()


def _code_text(s: str) -> str:
    """Code kept as written: trailing whitespace and leading blank lines dropped, indentation kept."""
    return re.sub(r"\A(?:[ \t]*\n)+", "", s).rstrip()


def _defines(code: str, name: str | None) -> bool:
    return bool(name) and re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def _describe(b: Block) -> str:
    # (an answer cut at its closing fence ends inside its block: whether generation ended is in stop_reason)
    return f"fenced block ({b.lang or 'no language'})"


def _preferred(blocks: list[Block], languages) -> Block | None:
    langs = {x.lower() for x in languages or ()}
    return next((b for b in blocks if b.lang in langs), None) or (blocks[0] if blocks else None)


@register_extractor("raw")
def extract_raw(text: str, ex: Example, **_) -> Extracted:
    answer = text.strip()
    return Extracted(answer, "raw text", None if answer else "empty generation")


@register_extractor("code")
def extract_code(text: str, ex: Example, languages=("python", "py", "python3"), entry_meta: str | None = None,
                 continuation: bool = False, **_) -> Extracted:  # fmt: skip
    name = ex.meta.get(entry_meta) if entry_meta else None
    blocks = fenced_blocks(text)
    before = _code_text(text[: blocks[0].start]) if blocks else ""
    filled = [b for b in blocks if b.body.strip()]
    chosen = next((b for b in filled if _defines(b.body, name)), None)
    if not blocks:
        answer, how = _code_text(text), "raw text (no fence)"
    elif chosen is None and (_defines(before, name) or (before and not filled)):
        answer, how = before, "text before the first fence"
    elif chosen is not None or filled:
        chosen = chosen or _preferred(filled, languages)
        answer, how = _code_text(chosen.body), _describe(chosen)
    else:
        answer, how = "", "empty fenced block"
    if not answer.strip():
        return Extracted("", how, "no code in the generation")
    if name and not continuation and not _defines(answer, name):
        return Extracted(answer, how, f"no function {name!r} is defined")
    return Extracted(answer, how)


def _region(text: str, languages) -> tuple[str, str]:
    blocks = fenced_blocks(text)
    if not blocks:
        return text, "raw text (no fence)"
    b = _preferred(blocks, languages)
    return b.body, _describe(b)


@register_extractor("command", version=2)
def extract_command(text: str, ex: Example, languages=("bash", "sh", "shell", "console", "zsh"), **_) -> Extracted:
    region, how = _region(text, languages)
    for line in region.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):  # a comment or a shebang line is not the command
            line = re.sub(r"^\$\s+", "", line)
            if len(line) > 1 and line.startswith("`") and line.endswith("`"):
                line = line.strip("`")
            return Extracted(line.strip(), how + ", first line")
    return Extracted("", how, "no command in the generation")


@register_extractor("sql")
def extract_sql(text: str, ex: Example, languages=("sql", "sqlite"), **_) -> Extracted:
    region, how = _region(text, languages)
    sql = " ".join(re.split(r";|\n\s*\n", region.strip(), maxsplit=1)[0].split())
    return Extracted(sql, how + ", up to ';' or a blank line", None if sql else "no SQL in the generation")


@register_extractor("formula")
def extract_formula(text: str, ex: Example, languages=("excel", "formula"), **_) -> Extracted:
    region, how = _region(text, languages)
    for line in region.splitlines():
        line = line.strip().strip("`").strip()
        if line:
            return Extracted(line, how + ", first line")
    return Extracted("", how, "no formula in the generation")
