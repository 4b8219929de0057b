"""Local disk in huggingface_hub's format: the cache and --local-dir layouts, offline reads."""
