"""Example search spaces (docs/search_spaces.md), installed as ``dse_tune.search_spaces``."""
