"""`promptintern status RESULTS`: every unit of a results folder, done, failed, invalid, missing or running."""

from __future__ import annotations

import sys


def cmd(args) -> int:
    """Every unit of the folder's plan: done, failed (with its error), invalid (with the reason), missing, or
    running (only while a live run holds its claim); retried units say how many attempts they took."""
    import json

    from promptintern.harness.claims import live_claims
    from promptintern.harness.executor import unit_progress
    from promptintern.harness.store import PLAN_FILE, ResultStore, diagnose
    from promptintern.progress import Progress

    store = ResultStore(args.results)
    if not store.root.is_dir():
        print(f"error: {store.root}: no such results folder", file=sys.stderr)
        return 2
    try:
        planned = json.loads((store.root / PLAN_FILE).read_text())["units"]
    except (OSError, ValueError, KeyError, TypeError):
        planned = None
        print(f"note: {store.root / PLAN_FILE} is absent or unreadable: listing the result files only (missing "
              "units cannot be named)")
    units = planned if planned is not None else [
        {"id": p.stem, "label": ""} for p in sorted(store.runs.glob("*.json"))] if store.runs.is_dir() else []
    live = live_claims(store.root)
    counts = dict.fromkeys(("done", "failed", "invalid", "missing", "running"), 0)
    retried = 0
    for u in units:
        uid, label = u["id"], u.get("label") or ""
        rec, reason = diagnose(store.path(uid), uid, require_artifacts=False)
        if rec is not None:
            counts["done"] += 1
            n = int(rec.get("attempts") or 1)
            retried += n > 1
            if n > 1:
                print(f"done     {uid}  {label}: after {n} attempts (its worker died)")
            dep = store.read(u["deps"][0], require_artifacts=False) if u.get("deps") else None
            if (rec.get("kind") == "eval" and dep and dep.get("adapter_sha256") and rec.get("adapter_sha256")
                    and dep["adapter_sha256"] != rec["adapter_sha256"]):
                print(f"done     {uid}  {label}: evaluated an earlier training of stage {u['deps'][0]} (its "
                      "adapter was trained again since; delete this result to evaluate the current one)")
            continue
        if uid in live:
            h = live[uid]
            counts["running"] += 1
            p = unit_progress(store, uid)
            where = f" — {Progress(**{k: p[k] for k in ('what', 'done', 'total', 'elapsed_s')}).line()}" if p else ""
            print(f"running  {uid}  {label}: run {h.get('run_id')} (pid {h.get('pid')} on {h.get('host')}){where}")
        elif reason == "absent":
            counts["missing"] += 1
            print(f"missing  {uid}  {label}")
        elif reason.startswith("status 'failed'"):
            counts["failed"] += 1
            try:
                n = int(json.loads(store.path(uid).read_text()).get("attempts") or 0)
            except (OSError, ValueError, TypeError):
                n = 0
            retried += n > 1
            error = reason.split(": ", 1)[1] if ": " in reason else "no error recorded"
            print(f"failed   {uid}  {label}: {error}"
                  + (f" ({n} attempts)" if n > 1 else ""))
        else:
            counts["invalid"] += 1
            print(f"invalid  {uid}  {label}: {reason} (runs again on the next `promptintern run`)")
    stale = len(store.stale_records()) if planned is not None else 0
    print(f"{store.root}: {len(units)} units: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + (f"; {retried} retried" if retried else "")
          + (f"; {stale} results of earlier plans (kept, left out of the tables)" if stale else ""))
    return 0


def register(sub) -> None:
    sp = sub.add_parser("status", help="summarize a results folder")
    sp.add_argument("results", help="results/<experiment>")
    sp.set_defaults(fn=cmd)
