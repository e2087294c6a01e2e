"""The HTML report pipeline (merged into ``evaluation`` by the registry)."""
