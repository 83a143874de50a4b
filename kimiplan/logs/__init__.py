"""Call logs of any size: summarized out of core by DuckDB (`summarize_log`), with column mappings for the
formats teams already have (`load_mapping`), and a synthetic log generator for tests and benchmarks."""

from kimiplan.logs.generate import generate_call_log
from kimiplan.logs.mapping import LogMapping, builtin_mappings, load_mapping
from kimiplan.logs.summarize import LogSummary, summarize_log

__all__ = ["LogMapping", "LogSummary", "builtin_mappings", "generate_call_log", "load_mapping", "summarize_log"]
