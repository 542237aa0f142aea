"""How many examples a property test draws: its own count in `make test`, a few in `make test-fast`.

A test's `@settings(max_examples=N)` overrides the profile, so the `dev` profile alone would not
shorten it; `examples(N)` does. Pinned `@example` cases run in both.
"""

from __future__ import annotations

import os
from typing import Final

DEV_PROFILE: Final = "dev"
DEV_EXAMPLES: Final = 15


def examples(full: int) -> int:
    """`full`, or at most DEV_EXAMPLES under HYPOTHESIS_PROFILE=dev."""
    if os.environ.get("HYPOTHESIS_PROFILE") == DEV_PROFILE:
        return min(full, DEV_EXAMPLES)
    return full
