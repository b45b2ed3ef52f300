"""The paper's numbers beside ours (PAPER.md section 7, ICML numbering): package data, like the schema."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

PAPER: dict[str, dict[str, Any]] = yaml.safe_load(resources.files("puzzle.paper").joinpath("numbers.yaml").read_text())
