"""Re-score a submission: every generation scored again with its task's own metric, on the task's test items.

:func:`rescore_submission` is ``promptintern leaderboard validate --rescore``: it needs the tasks and their data
here, and reports every sample whose score, item or aggregate does not hold up (see its docstring).
"""

from __future__ import annotations

import json
from pathlib import Path

from promptintern import tasks as tasks_mod
from promptintern.hashing import content_id

from .measure import mean_se
from .selection import draw
from .submission import close as _close
from .submission import json_number as _nn

MAX_LISTED = 20  # per (entry, task) and kind of problem, sample ids named one by one; then a count


def _listed(errors: list[str], ids: list[str], line) -> None:
    for sid in ids[:MAX_LISTED]:
        errors.append(line(sid))
    if len(ids) > MAX_LISTED:
        errors.append(line(f"... and {len(ids) - MAX_LISTED} more"))


def _task_folders(sub: dict, include, base_dir) -> list[str]:
    """Where the tasks come from: ``include`` (--include-path and ``$PROMPTINTERN_TASK_PATHS``, passed by the
    command line) and the submission's own ``task_folders`` (relative to the submission file's folder) that exist
    here."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    own = [base / p for p in ((sub.get("task_folders") or {}).get("paths") or []) if isinstance(p, str)]
    paths = [str(Path(p).expanduser().resolve()) for p in include or []]
    paths += [str(p.resolve()) for p in own if p.is_dir()]
    return list(dict.fromkeys(paths))


def _score_one(task, generations: list[str], examples: list) -> list[dict | Exception]:
    """The task's own score path on every sample; a crash is returned (as the exception) for the sample that
    raised it, not raised: the whole batch first, then sample by sample when the batch failed."""
    try:
        out = task.score(generations, examples)
        if len(out) == len(examples):
            return out
    except Exception:  # noqa: BLE001 - narrowed to the sample(s) below
        pass
    res: list = []
    for g, ex in zip(generations, examples, strict=True):
        try:
            res.append(task.score([g], [ex])[0])
        except Exception as err:  # noqa: BLE001 - reported, naming the sample
            res.append(err)
    return res


def rescore_submission(sub: dict, data_dir: str | None = None, *, include: list | None = None,
                       allow_shadowing: bool | None = None, base_dir: str | Path | None = None) -> list[str]:
    """Score every submitted generation again with its task's own metric (extraction, metric, the sandbox for code
    tasks: ``task.score``, as an evaluation unit does) on the task's test items, and re-derive each task's results
    from the re-scored samples. Needs the tasks (built-in, ``include`` folders, ``$PROMPTINTERN_TASK_PATHS`` or the
    submission's ``task_folders`` relative to ``base_dir``) and their data (``data_dir``).

    Reports, naming entry, task and sample: a task that cannot be loaded or whose scoring or data differ from the
    submission's; a sample id that is not a test item of the task, a duplicate, or (when the submission records
    how the test items were drawn, or their hash) a test item the grid should have but the submission lacks; a
    sample whose re-score crashed; a per-sample score that differs from the re-score; results (score, se, n) that
    differ from the re-scored samples'."""
    errors: list[str] = []
    folders = _task_folders(sub, include, base_dir)
    if allow_shadowing is None and (sub.get("task_folders") or {}).get("allow_shadowing"):
        allow_shadowing = True
    cache: dict = {}
    for i, e in enumerate(sub["entries"]):
        for task_name in sorted(e["records"]):
            rec = e["records"][task_name]
            where = f"entries[{i}] ({e['name']}).{task_name}"
            if task_name not in cache:
                try:
                    task = tasks_mod.get_task(task_name, data_dir=data_dir, include=folders,
                                              allow_shadowing=allow_shadowing)
                    test_all = task.load(task.test_split)
                    cache[task_name] = (task, test_all, None)
                except Exception as err:  # noqa: BLE001 - unknown task, missing data: reported
                    cache[task_name] = (None, None, f"{type(err).__name__}: {err}")
            task, test_all, load_error = cache[task_name]
            if task is None:
                errors.append(f"unscorable: {where}: cannot load the task to re-score its "
                              f"{len(rec['samples'])} sample(s): {load_error} (a task of your own: pass its folder "
                              "with --include-path DIR; its data: --data-dir DIR)")
                continue
            # the local task must score as the submission's did, on the same data
            local_scoring = _jsonish(task.scoring_identity())
            if isinstance(rec.get("scoring"), dict) and rec["scoring"] != local_scoring:
                diff = sorted(k for k in set(rec["scoring"]) | set(local_scoring)
                              if rec["scoring"].get(k) != local_scoring.get(k))
                errors.append(f"unscorable: {where}: the local task scores differently from the submission's "
                              f"(differs in {', '.join(diff)}); cannot re-score")
                continue
            data = rec.get("data")
            if isinstance(data, dict) and isinstance(data.get("eval"), dict):
                data = data["eval"]  # a MetaTuner unit records its train and eval tasks' data: the eval task's
            if isinstance(data, dict):
                # data file -> sha256 (the task definition's id is left out: the scoring identity is what matters)
                files = {k: v for k, v in data.items() if k != "task_definition"}
                mine = task.data_fingerprint()
                changed = sorted(f for f in set(files) | set(mine) if files.get(f) != mine.get(f))
                if changed:
                    errors.append(f"unscorable: {where}: the local data differ from the submission's (files "
                                  f"{', '.join(changed)}); cannot re-score")
                    continue
            if rec["metric"] != task.primary_metric:
                errors.append(f"inconsistent: {where}: metric {rec['metric']!r} is not the task's primary metric "
                              f"{task.primary_metric!r}")
            metric = task.primary_metric
            by_id = {ex.id: ex for ex in test_all}
            ids = [s["id"] for s in rec["samples"]]
            unknown = [x for x in ids if x not in by_id]
            _listed(errors, unknown, lambda sid, w=where, t=task:
                    f"inconsistent: {w}: sample {sid} is not an item of the task's {t.test_split!r} split")
            seen: set = set()
            dups = [x for x in ids if x in seen or seen.add(x)]
            _listed(errors, sorted(set(dups)), lambda sid, w=where: f"inconsistent: {w}: sample {sid} appears "
                    "more than once")
            # which test items the grid had: redrawn from how the submission says they were drawn, else its hash
            how = (sub.get("selection") or {}).get(task_name)
            if isinstance(how, dict):
                try:
                    expected = draw(test_all, how.get("test_limit"), int(how.get("sample_seed") or 0),
                                    f"{task_name}/{task.test_split}", how.get("stratify"))
                except Exception as err:  # noqa: BLE001 - a malformed selection record
                    errors.append(f"inconsistent: {where}: cannot redraw the test items from the submission's "
                                  f"selection {how!r}: {err}")
                else:
                    exp_set, id_set = set(expected), set(ids)
                    _listed(errors, [x for x in expected if x not in id_set], lambda sid, w=where:
                            f"incomplete: {w}: test item {sid} of the grid has no sample")
                    _listed(errors, [x for x in ids if x in by_id and x not in exp_set], lambda sid, w=where:
                            f"inconsistent: {w}: sample {sid} is not one of the grid's test items")
            items = rec.get("items") or {}
            if items.get("n_test") is not None and items["n_test"] != len(ids):
                errors.append(f"incomplete: {where}: {len(ids)} sample(s) but the grid planned {items['n_test']} "
                              "test items")
            elif items.get("test") and content_id(ids) != items["test"]:
                errors.append(f"inconsistent: {where}: the sample ids are not the planned test items (their hash "
                              f"{content_id(ids)} is not the recorded {items['test']})")
            scorable = [s for s in rec["samples"] if s["id"] in by_id]
            scored = _score_one(task, [s["generation"] for s in scorable], [by_id[s["id"]] for s in scorable])
            values, crashed = [], False
            for s, sc in zip(scorable, scored, strict=True):
                if isinstance(sc, Exception):
                    crashed = True
                    errors.append(f"unscorable: {where}: sample {s['id']}: re-scoring raised "
                                  f"{type(sc).__name__}: {sc}")
                    continue
                v = sc.get(metric)
                v = None if v is None or isinstance(v, str) else float(v)
                values.append(v)
                if not _close(s["score"], v):
                    status = f" ({sc['status']})" if sc.get("status") else ""
                    errors.append(f"inconsistent: {where}: sample {s['id']}: recorded {metric} {s['score']!r}, "
                                  f"re-scored {v!r}{status}")
            if crashed or unknown:
                continue  # the aggregate over a partial re-score proves nothing
            mean, se = mean_se([v for v in values if v is not None])
            res = e["results"].get(task_name) or {}
            again = {"score": _nn(mean), "score_se": _nn(se), "n": sum(v is not None for v in values)}
            for k, v in again.items():
                if not _close(res.get(k), v):
                    errors.append(f"inconsistent: {where}: results.{k} is {res.get(k)!r} but the re-scored samples "
                                  f"give {v!r}")
    return errors



def _jsonish(x):
    """As the value reads back from JSON (tuples as lists), to compare a local identity with a recorded one."""
    return json.loads(json.dumps(x, default=str))
