"""`promptintern prices`: the available price tables."""

from __future__ import annotations


def cmd(args) -> int:
    from promptintern.harness.cost import available_tables, caching_rule_text, load_price_table, prices_dir

    names = available_tables()
    if not names:
        print(f"no price tables in {prices_dir()}")
        return 1
    for n in names:
        t = load_price_table(n)
        hw = ", ".join(f"{h.key} ${h.usd_per_hour:.4g}/{h.per}-h" + (" (unverified)" if h.unverified else "")
                       for h in t.hardware)
        print(f"{n}{' (default)' if t.default else ''}: {t.title}; retrieved {t.retrieved}\n"
              f"  API models: {', '.join(t.api_models)} (headline {t.headline_model})\n"
              f"  prompt caching: {caching_rule_text(t)}\n  hardware: {hw}")
    return 0


def register(sub) -> None:
    sp = sub.add_parser("prices", help="list the price tables")
    sp.set_defaults(fn=cmd)
