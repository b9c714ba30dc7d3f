"""Golden files: compare a JSON-able value with a file, or rewrite the file on request.

    UNIGATE_UPDATE_GOLDEN=1 pytest tests/unit      # rewrite every golden file that is compared

Without the flag a missing file fails (a golden file is written on purpose, never by accident)
and a difference fails with a unified diff of the pretty, key-sorted JSON.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

UPDATE_ENV = "UNIGATE_UPDATE_GOLDEN"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def assert_golden(path: Path, actual: Any) -> None:
    text = pretty(actual)
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; run with {UPDATE_ENV}=1 to write it")
    expected = pretty(load_json(path))
    if expected != text:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"{path} (expected)",
            tofile="actual",
        )
        pytest.fail(
            f"{path} differs (rerun with {UPDATE_ENV}=1 if the change is intended):\n"
            + "".join(diff),
            pytrace=False,
        )
