"""The launcher tests reuse the training tests' datasets (a session fixture)."""

from tests.train.conftest import train_data  # noqa: F401
