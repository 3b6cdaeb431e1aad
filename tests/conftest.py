"""Shared pytest set-up: Hypothesis profiles and paths."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hypothesis import HealthCheck, settings

# coremltools logs a warning for each native Core ML binding that Linux lacks.
logging.getLogger("coremltools").setLevel(logging.ERROR)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"

settings.register_profile(
    "default", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("quick", max_examples=20, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
