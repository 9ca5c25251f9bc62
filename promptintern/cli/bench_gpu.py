"""`promptintern bench-gpu`: training, decode and prompt-length speed ratios, side by side in one run."""

from __future__ import annotations

from promptintern.harness import bench_gpu


def cmd(args) -> int:
    bench_gpu.main(args=args)
    return 0


def register(sub) -> None:
    sp = sub.add_parser("bench-gpu", help="training, decode and prompt-length speed ratios, side by side in one run")
    bench_gpu.parser(sp)
    sp.set_defaults(fn=cmd)
