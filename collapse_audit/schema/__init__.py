"""The JSON Schema of ``results.json`` (``results.schema.json``, draft 2020-12).

``results_schema()`` returns it as a dict; ``validate_results(results)`` checks
a results dict against it and returns the error messages (empty when valid).
Validation needs ``jsonschema``, a dev dependency: the scan itself never calls
it, tests and users who want to check a file do.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["SCHEMA_FILE", "results_schema", "validate_results"]

SCHEMA_FILE = "results.schema.json"


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def results_schema() -> dict[str, Any]:
    """The results.json schema as a fresh dict (safe to modify)."""
    return json.loads(_schema_text())


def validate_results(results: dict[str, Any]) -> list[str]:
    """Validate ``results`` against the schema; one ``"<json path>: <message>"`` per error, sorted.

    Raises ImportError when ``jsonschema`` is not installed
    (``pip install 'collapse-audit[dev]'``).
    """
    try:
        import jsonschema
    except ModuleNotFoundError as e:  # pragma: no cover - dev dependency present in tests
        raise ImportError(
            "validating results.json needs the 'jsonschema' package: pip install jsonschema "
            "(or pip install 'collapse-audit[dev]')"
        ) from e
    validator = jsonschema.Draft202012Validator(results_schema())
    errors = []
    for err in validator.iter_errors(results):
        where = "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in err.absolute_path)
        errors.append(f"{where}: {err.message}")
    return sorted(errors)
