"""The store's one health state: '' when writing works, else what failed (shared by its parts)."""

from __future__ import annotations

import logging

log = logging.getLogger("wilo_backend.store.store")


class StorageHealth:
    """What the writer and the evictor report; /metrics and status read it."""

    def __init__(self) -> None:
        self.error = ""

    def degrade(self, message: str) -> None:
        if message != self.error:
            log.error("storage degraded: %s; samples are kept in memory and retried", message)
        self.error = message
