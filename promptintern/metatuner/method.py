"""MetaTuner as a registered method (:data:`promptintern.methods.METHODS` imports this module on first use).

It trains a generator and a hypernetwork in its own unit (``promptintern/harness/metatuner_unit.py``), not a
chain of LoRA stages; at test time the actor reads the generated prompt and the query. Its options are the
fields of :class:`~.config.MetaTunerConfig`, validated there.
"""

from __future__ import annotations

from dataclasses import fields

from ..methods import METHODS, QUERY_ONLY, MethodInfo, MethodPlan, MethodSpec
from .config import MetaTunerConfig, method_label


def plan(spec: MethodSpec) -> MethodPlan:
    MetaTunerConfig.from_dict(spec.options)  # an unknown or bad option is an error here, at plan time
    return MethodPlan(train=[], test=QUERY_ONLY)


METHODS.add("metatuner", MethodInfo(
    "metatuner", plan, unit_kind="metatuner", option_names=lambda: {f.name for f in fields(MetaTunerConfig)},
    label=lambda spec: method_label(spec.options), order=5, color="#9467bd", marker="P"))
