"""kimiplan: plan Kimi K2.6 in production — tokens per route, rate-limit headroom, monthly cost."""

__version__ = "0.1.0"
