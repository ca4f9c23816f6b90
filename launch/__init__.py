"""Entry points (run as `python -m launch.<name>` from the repository root)."""
