"""The errors that a user's input causes: each is printed as one line, with exit code 2."""

from __future__ import annotations

from tasks.base import DatasetError
from zoo.registry import RegistryError


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


USER_ERRORS = (UsageError, RegistryError, DatasetError)
