"""NL2Bash (Lin et al. 2018) from the authors' ``all.nl`` / ``all.cm`` (12,607 aligned pairs), split the way
the authors' scripts do (TellinaTool/nl2bash ``data/scripts/filter_data.py`` then ``split_data.py``),
re-implemented without their bash parser (bashlint) and spelling corrector.

What the authors do, and what is implemented here:

1. Filter (``filter_data.py``): drop pairs whose description has more than 50 words; parse each command with
   bashlint and drop it when parsing fails or when it uses a utility outside the 100 most frequent
   utilities of the corpus (ties at the 100th count included; utilities on bashlint's BLACK_LIST/GREY_LIST
   never count as frequent). HERE: the 50-word rule exactly; "utilities" are found by a small shell lexer
   (:func:`command_utilities`: the head word of every simple command, including those after pipes, ``;``,
   ``&&``, ``||``, inside ``$( )`` / backticks / ``( )`` / ``{ }``, the command run by ``xargs`` and by
   ``find -exec/-execdir/-ok``); a command with unbalanced quotes or brackets counts as unparsable; the
   excluded-utility list is :data:`EXCLUDED_UTILITIES` (interpreters and editors such as awk, sed, perl,
   python, vim, plus shell-state builtins such as alias/export/set) because bashlint's own lists are not
   reproduced here.
2. Split (``split_data.py``): group pairs by a canonical form of the description (``canonicalize_text``:
   the authors' ``clean_sentence`` rules, regex word split, lower-casing of plain words, their stop-word list,
   number words to digits, Snowball stemming); iterate the groups in sorted order with ``random.seed(100)``
   and one ``random.randint(0, 11)`` per group: 0-9 train, 10 dev, 11 test (10:1:1); then move every dev/test
   pair whose command also occurs in train into train. HERE: exactly that, except that the authors'
   spelling correction is not applied (it needs their word-frequency file), and stemming uses NLTK's Snowball
   stemmer when NLTK is installed (it is a dependency of lm-eval) and a no-op otherwise.

The authors' released split has 8,090 / 609 / 606 train/dev/test pairs (9,305 pairs after filtering, in 8,409
description groups: their ``data/bash/random_tokens.txt`` has 8,409 lines, and Python's ``random`` seeded with
100 reproduces its values, so the split mechanics match). This reproduction keeps 10,107 pairs in 9,082 groups
and gives train 8,772 / dev 657 / test 678 (:data:`EXPECTED_SIZES`, asserted by the tests); the differences
come from the utility filter (no bashlint) and the missing spelling correction.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import random
import re
from pathlib import Path

from promptintern.errors import ConfigError, DataFormatError
from promptintern.paths import cache_dir

from ...task_types import Example
from ..registry import register_loader
from .common import find_file

RANDOM_SEED = 100
NUM_FOLDS = 12
MAX_TEXT_LENGTH = 50
NUM_UTILITIES = 100
# Filled in from a run on the authors' files; the tests assert these.
EXPECTED_SIZES = {"train": 8772, "dev": 657, "test": 678}

# Not counted as "frequent utilities" (the authors exclude bashlint's BLACK_LIST and GREY_LIST).
EXCLUDED_UTILITIES = frozenset(
    """awk gawk mawk nawk sed perl python python2 python3 ruby php node java javac gcc g++ cc cpp make
    vi vim nano emacs less more screen tmux alias unalias set unset export shift exit logout source .
    apt-get apt brew yum""".split()
)

# ---------------------------------------------------------------- description canonicalization (grouping)

_STOPWORDS = frozenset(
    """the has have had here there do how i i'd i'll i'm i've me my myself can could did does doing must
    should would you you'd you'll you're you've your yours yourself yourselves he he'd he'll he's her here's
    hers herself him himself his she she'd she'll she's it's itself we we'd we'll we're we've their theirs
    themselves then there's they they'd they'll they're they've let let's this what's how's""".split()
)
_WORD2NUM = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "twenty-four": 24,
}  # fmt: skip
_PERMISSION_RE = r"(([u|g|o]+[\+|-|=][r|w|x|s|u|t]+\,)*[u|g|o]+[\+|-|=][r|w|x|s|u|t]+)"
_WORD_SPLIT = re.compile("({}+|{}+|(?:[^\\s,\"]|\"(?:\\\\.|[^\"])*\")+)".format("('(?:\\\\.|[^ '])*')", _PERMISSION_RE))
_SPECIAL_SYMBOL_RE = re.compile(r"[^ ]*[_\.\*|\\|\/|\~|\@|\%|\#|\?|\+|\$|\{|\}|\<|\>]+[^ ]*")


def _clean_sentence(s: str) -> str:
    s = re.sub(r"\([^)]*\)", "", s)
    s = s.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
    s = s.replace("`'", '"').replace("``", '"').replace("''", '"').replace("(", " ( ").replace(")", " ) ")
    s = s.replace(" `", " '").replace("` ", "' ")
    for p in (r"(,\s+)|(,$)", r"(;\s+)|(;$)", r"(:\s+)|(:$)", r"(\.\s+)|(\.$)"):
        s = re.sub(p, " ", s)
    for suffix in ("'s", "'re", "'ve", "'d", "'t"):
        s = s.replace(suffix, " " + suffix)
    s = re.sub(r"^[T|t]o ", "", s)
    s = re.sub(r"\$\{HOME\}", r"$HOME", s)
    s = re.sub(r'"?normal\/regular"?', "regular", s)
    s = re.sub(r'"?regular\/normal"?', "regular", s)
    s = re.sub(r'"?file\/directory"?', "file or directory", s)
    s = re.sub(r'"?files\/directories"?', "files and directories", s)
    s = re.sub(r'"?name\/path"?', "name or path", s)
    s = re.sub(r'"?names\/paths"?', "name or path", s)
    return s.replace(" pattern' ", " pattern ")


def _is_english_word(w: str) -> bool:
    if w in ("i.e", "i.e.", "e.g", "e.g.", "s.a", "s.a.", "s.t", "s.t.", "'s", "'t"):
        return True
    return bool(re.match(r"^[a-z]+(-[a-z]+)*$", w, re.IGNORECASE))


def _quoted(w: str) -> bool:
    return w[0] in "\"'" and w[-1] in "\"'"


@functools.lru_cache(maxsize=1)
def _stemmer():
    try:
        from nltk.stem import SnowballStemmer

        return SnowballStemmer("english").stem
    except Exception:  # NLTK missing: group without stemming (documented)
        return lambda w: w


def canonicalize_text(nl: str) -> str:
    """The grouping key of a description (the authors' ``basic_tokenizer`` without spelling correction)."""
    stem = _stemmer()
    out = []
    for m in _WORD_SPLIT.findall(_clean_sentence(nl)):
        word = m[0].strip()
        if word in ('"', "'") or not word:
            continue
        if len(word) > 1 and _is_english_word(word) and not _quoted(word):
            word = word.lower()
        if word.lower() in _STOPWORDS:
            continue
        if word in _WORD2NUM:
            word = str(_WORD2NUM[word])
        if not _quoted(word) and not re.match(_SPECIAL_SYMBOL_RE, word):
            word = stem(word)
        if word.strip():
            out.append(word)
    return " ".join(out)


# ---------------------------------------------------------------- utilities of a command (filtering, metric)

_SHELL_KEYWORDS = frozenset("if then else elif fi for while until do done case esac in function select ! [[ ]] { }".split())
_WRAPPERS = frozenset("sudo nohup time nice env exec command builtin".split())
# xargs options that take a separate argument
# (-i, -e and -l take an optional *attached* argument only)
_XARGS_ARG_OPTS = frozenset("-I -n -P -L -d -s -E -a --max-args --max-procs --delimiter --arg-file".split())


class UnparsableCommand(ValueError):
    pass


def _lex(cmd: str) -> list[tuple[str, str]]:
    """Tokens as (kind, text): kind 'w' for words, 'op' for control operators / openers / closers."""
    toks: list[tuple[str, str]] = []
    i, n = 0, len(cmd)
    word: list[str] = []
    stack: list[str] = []

    def flush():
        if word:
            toks.append(("w", "".join(word)))
            word.clear()

    while i < n:
        c = cmd[i]
        if c == "\\" and i + 1 < n:
            word.append(cmd[i : i + 2])
            i += 2
        elif c == "'":
            j = cmd.find("'", i + 1)
            if j < 0:
                raise UnparsableCommand("unterminated single quote")
            word.append(cmd[i : j + 1])
            i = j + 1
        elif c == '"':
            j = i + 1
            while j < n and cmd[j] != '"':
                j += 2 if cmd[j] == "\\" else 1
            if j >= n:
                raise UnparsableCommand("unterminated double quote")
            inner = cmd[i + 1 : j]
            # command substitutions inside double quotes still run commands
            for sub in re.findall(r"\$\(([^()]*)\)|`([^`]*)`", inner):
                toks.extend([("op", "$(")] + _lex(sub[0] or sub[1]) + [("op", ")")])
            word.append(cmd[i : j + 1])
            i = j + 1
        elif c == "$" and cmd.startswith("$((", i):
            j = cmd.find("))", i)
            if j < 0:
                raise UnparsableCommand("unterminated arithmetic expansion")
            word.append(cmd[i : j + 2])
            i = j + 2
        elif c == "$" and cmd.startswith("$(", i):
            flush()
            toks.append(("op", "$("))
            stack.append(")")
            i += 2
        elif c == "$" and cmd.startswith("${", i):
            j = cmd.find("}", i)
            if j < 0:
                raise UnparsableCommand("unterminated parameter expansion")
            word.append(cmd[i : j + 1])
            i = j + 1
        elif c == "`":
            flush()
            j = cmd.find("`", i + 1)
            if j < 0:
                raise UnparsableCommand("unterminated backquote")
            toks.extend([("op", "$(")] + _lex(cmd[i + 1 : j]) + [("op", ")")])
            i = j + 1
        elif c in "<>" and cmd.startswith("(", i + 1):  # process substitution <( ) >( )
            flush()
            toks.append(("op", "$("))
            stack.append(")")
            i += 2
        elif c in " \t\n":
            flush()
            i += 1
        elif c == "&" and (word and "".join(word)[-1:] in "<>" or cmd.startswith("&>", i)):
            word.append(c)  # part of a redirection: 2>&1, >&2, &>file
            i += 1
        elif c in "|&;":
            flush()
            op = cmd[i : i + 2] if cmd[i : i + 2] in ("||", "&&", ";;", "|&", "&>") else c
            if op == "&>":  # redirection, not an operator
                word.append(op)
                i += 2
                continue
            toks.append(("op", op))
            i += len(op)
        elif c == "(":
            flush()
            if toks and toks[-1][0] == "w" and not (toks[-1][1].endswith("=")):
                # '(' in the middle of a simple command is a bash syntax error (e.g. unescaped find groups)
                raise UnparsableCommand("unexpected '('")
            toks.append(("op", "("))
            stack.append(")")
            i += 1
        elif c == ")":
            flush()
            if not stack:
                raise UnparsableCommand("unbalanced ')'")
            stack.pop()
            toks.append(("op", ")"))
            i += 1
        else:
            word.append(c)
            i += 1
    flush()
    if stack:
        raise UnparsableCommand("unbalanced '('")
    return toks


_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_REDIRECT = re.compile(r"^[0-9]*(>>?|<<?<?|>&|<&|&>>?)")


def _heads(words: list[str]) -> list[str]:
    """Utilities named in one simple command (its head, plus xargs / find -exec payloads)."""
    out: list[str] = []
    i = 0
    # skip assignments, redirections and keywords before the head
    while i < len(words) and (
        _ASSIGN.match(words[i]) or _REDIRECT.match(words[i]) or words[i] in _SHELL_KEYWORDS
    ):
        if _REDIRECT.match(words[i]) and re.fullmatch(r"[0-9]*(>>?|<<?<?|>&|<&|&>>?)", words[i]):
            i += 1  # the redirect target is the next word
        i += 1
    if i >= len(words):
        return out
    head = words[i].strip("\"'")
    head = head.rsplit("/", 1)[-1] if "/" in head and not head.startswith("./") else head
    if not head or head.startswith("$") or head.startswith("./"):
        return out
    out.append(head)
    rest = words[i + 1 :]
    if head in _WRAPPERS:
        j = 0
        while j < len(rest) and (rest[j].startswith("-") or _ASSIGN.match(rest[j])):
            j += 1
        out.extend(_heads(rest[j:]))
    elif head == "xargs":
        j = 0
        while j < len(rest) and rest[j].startswith("-"):
            opt = rest[j]
            j += 2 if opt in _XARGS_ARG_OPTS else 1
        out.extend(_heads(rest[j:]))
    elif head == "find":
        for j, w in enumerate(rest):
            if w in ("-exec", "-execdir", "-ok", "-okdir"):
                payload = []
                for w2 in rest[j + 1 :]:
                    if w2 in ("\\;", "';'", '";"', "+", ";"):
                        break
                    payload.append(w2)
                out.extend(_heads(payload))
    return out


def command_utilities(cmd: str) -> list[str]:
    """The utility names a bash one-liner runs, in order (raises UnparsableCommand on unbalanced quoting)."""
    utilities: list[str] = []
    current: list[str] = []
    for kind, text in _lex(cmd):
        if kind == "op":
            utilities.extend(_heads(current))
            current = []
        else:
            current.append(text)
    utilities.extend(_heads(current))
    return [u for u in utilities if u not in _SHELL_KEYWORDS]


# ---------------------------------------------------------------- filter + split


def _read_pairs(nl_file: str | Path, cm_file: str | Path) -> list[tuple[str, str]]:
    nl_file, cm_file = Path(nl_file), Path(cm_file)
    nls = nl_file.read_text(encoding="utf-8").split("\n")
    cms = cm_file.read_text(encoding="utf-8").split("\n")
    if nls and nls[-1] == "":
        nls.pop()
    if cms and cms[-1] == "":
        cms.pop()
    if len(nls) != len(cms):
        line = min(len(nls), len(cms)) + 1
        raise DataFormatError(cm_file if len(cms) < len(nls) else nl_file, line,
                              f"all.nl has {len(nls)} lines but all.cm has {len(cms)}: the files must be line-aligned")  # fmt: skip
    return [(nl.strip(), cm.strip()) for nl, cm in zip(nls, cms, strict=True)]


def filter_pairs(pairs: list[tuple[str, str]], num_utilities: int = NUM_UTILITIES) -> list[tuple[int, str, str]]:
    """(original line index, nl, cm) of the pairs kept by the authors' filter (see module docstring)."""
    utils_of: list[list[str] | None] = []
    counts: collections.Counter = collections.Counter()
    for _, cm in pairs:
        try:
            us = command_utilities(cm)
        except UnparsableCommand:
            us = None
        utils_of.append(us)
        if us:
            counts.update(us)
    top: set[str] = set()
    threshold = -1
    for u, freq in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if threshold > 0 and freq < threshold:
            break
        if u in EXCLUDED_UTILITIES:
            continue
        top.add(u)
        if len(top) == num_utilities:
            threshold = freq
    kept = []
    for i, ((nl, cm), us) in enumerate(zip(pairs, utils_of, strict=True)):
        if len(nl.split()) > MAX_TEXT_LENGTH or not us:
            continue
        if all(u in top for u in us):
            kept.append((i, nl, cm))
    return kept


def split_pairs(kept: list[tuple[int, str, str]], seed: int = RANDOM_SEED) -> dict[str, list[tuple[int, str, str]]]:
    groups: dict[str, list] = collections.defaultdict(list)
    for item in kept:
        groups[canonicalize_text(item[1])].append(item)
    rng = random.Random(seed)
    tokens = [rng.randint(0, NUM_FOLDS - 1) for _ in range(len(groups))]
    train, dev, test = [], [], []
    train_commands = set()
    for ind, key in zip(tokens, sorted(groups), strict=True):
        if ind < NUM_FOLDS - 2:
            train.extend(groups[key])
            train_commands.update(cm for _, _, cm in groups[key])
        elif ind == NUM_FOLDS - 2:
            dev.extend(groups[key])
        else:
            test.extend(groups[key])
    out = {"train": train, "dev": [], "test": []}
    for name, items in (("dev", dev), ("test", test)):
        for item in items:
            (train if item[2] in train_commands else out[name]).append(item)
    out["train"] = train
    return out


SPLIT_CODE_VERSION = 1  # bump when the filter or split procedure changes (invalidates the on-disk cache)


@functools.lru_cache(maxsize=4)
def _splits_cached(nl_file: str, cm_file: str, seed: int, num_utilities: int) -> dict[str, list]:
    """Split once per process; the line indices are also cached on disk (keyed by the files' sha256) so that
    every worker process does not redo the ~4 s of canonicalization."""
    digest = hashlib.sha256()
    for f in (nl_file, cm_file):
        digest.update(Path(f).read_bytes())
    digest.update(f"{seed}/{num_utilities}/{SPLIT_CODE_VERSION}".encode())
    digest.update(Path(__file__).read_bytes())  # any change to this module invalidates the cached split
    pairs = _read_pairs(nl_file, cm_file)
    cache = None
    try:
        cache = cache_dir() / f"nl2bash-split-{digest.hexdigest()[:20]}.json"
        if cache.is_file():
            idx = json.loads(cache.read_text())
            return {k: [(i, *pairs[i]) for i in v] for k, v in idx.items()}
    except (OSError, ValueError, KeyError, IndexError):
        pass
    splits = split_pairs(filter_pairs(pairs, num_utilities), seed)
    if cache is not None:
        try:
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({k: [i for i, _, _ in v] for k, v in splits.items()}))
            os.replace(tmp, cache)
        except OSError:
            pass
    return splits


@register_loader("nl2bash")
def load_nl2bash(
    data_dir: Path | None,
    split: str,
    nl_path: str = "nl2bash/all.nl",
    cm_path: str = "nl2bash/all.cm",
    seed: int = RANDOM_SEED,
    num_utilities: int = NUM_UTILITIES,
) -> list[Example]:
    if split not in ("train", "dev", "test"):
        raise ConfigError("split", f"NL2Bash has splits ['dev', 'test', 'train'], not {split!r}")
    nl_file = find_file(data_dir, nl_path, "nl2bash")
    cm_file = find_file(data_dir, cm_path, "nl2bash")
    splits = _splits_cached(str(nl_file), str(cm_file), seed, num_utilities)
    return [
        Example(id=f"nl2bash/{idx + 1}", query=nl, reference=cm, meta={"line": idx + 1, "utilities": command_utilities(cm)})
        for idx, nl, cm in splits[split]
    ]
