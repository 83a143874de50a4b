"""kimiplan: plan Kimi in production — tokens per route, rate-limit headroom, monthly cost.

The front door (``import kimiplan as kp``)::

    sc = kp.load_scenario("support_chat")      # a bundled example, or a YAML/JSON file
    kp.plan(sc).describe()                       # the capacity verdict
    kp.forecast(sc, 12).monthly                  # monthly spend with Monte Carlo bands

Names load on first use (PEP 562), so ``import kimiplan`` and the CLI stay fast. Everything else lives in the
subpackages (``kimiplan.capacity``, ``kimiplan.finance`` ...); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (a module itself when the value is None)
_EXPORTS: dict[str, str] = {
    "load_scenario": "kimiplan.catalog.resolve",
    "load_catalog": "kimiplan.catalog.cards",
    "count_tokens": "kimiplan.tokens.tokenizer",
    "expected_cost": "kimiplan.finance.cost",
    "cost_of_usage": "kimiplan.finance.cost",
    "forecast": "kimiplan.finance.forecast",
    "compare": "kimiplan.finance.variants",
    "standard_variants": "kimiplan.finance.variants",
    "runway": "kimiplan.finance.balance",
    "backtest": "kimiplan.finance.backtest",
    "plan": "kimiplan.capacity.plan",
    "simulate": "kimiplan.capacity.sim.simulate",
    "sweep": "kimiplan.sweeps.run",
    "CalibrationFitter": "kimiplan.calibration.fitters",
    "apply_calibration": "kimiplan.catalog.calibrated",
    "load_calibration": "kimiplan.model.calibration",
    "KimiClient": "kimiplan.client",
    "write_report": "kimiplan.report.html",
}
_SUBMODULES = ("viz",)

__all__ = [  # pinned name by name in tests/test_public_api.py
    "CalibrationFitter",
    "KimiClient",
    "__version__",
    "apply_calibration",
    "backtest",
    "compare",
    "cost_of_usage",
    "count_tokens",
    "expected_cost",
    "forecast",
    "load_calibration",
    "load_catalog",
    "load_scenario",
    "plan",
    "runway",
    "simulate",
    "standard_variants",
    "sweep",
    "viz",
    "write_report",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from kimiplan import viz
    from kimiplan.calibration.fitters import CalibrationFitter
    from kimiplan.capacity.plan import plan
    from kimiplan.capacity.sim.simulate import simulate
    from kimiplan.catalog.calibrated import apply_calibration
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.client import KimiClient
    from kimiplan.finance.backtest import backtest
    from kimiplan.finance.balance import runway
    from kimiplan.finance.cost import cost_of_usage, expected_cost
    from kimiplan.finance.forecast import forecast
    from kimiplan.finance.variants import compare, standard_variants
    from kimiplan.model.calibration import load_calibration
    from kimiplan.report.html import write_report
    from kimiplan.sweeps.run import sweep
    from kimiplan.tokens.tokenizer import count_tokens


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"kimiplan.{name}")
    else:
        raise AttributeError(f"module 'kimiplan' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
