"""Child process for the crash test: writes segments fast until it is killed."""

from __future__ import annotations

import sys
from pathlib import Path

from storehelp import T0_NS, FakeClock, Feeder, make_config

from wilo_backend.store.store import Store


def main() -> None:
    folder = Path(sys.argv[1])
    clock = FakeClock()
    config = make_config(folder, segment_seconds=1, max_files=3, flush_seconds=0.2)
    store = Store(config, monotonic=clock)
    store.open()
    newest = store.summaries.newest_t_ns
    feeder = Feeder(store, clock, t0_ns=T0_NS if newest is None else newest + 10**9)
    print("ready", flush=True)
    while True:
        feeder.feed(0.125, batch_samples=100)
        print(store.committed_t_ns, flush=True)


if __name__ == "__main__":
    main()
