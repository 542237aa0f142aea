"""The replaced design's loop shape, written here for the efficiency comparison (not copied).

A thread reads the sensor once per 1.25 ms, paced by `time.sleep`, and every second formats the
rows it gathered as CSV and writes them to a file of their own (one file per second). Same
register-level simulator and bus as the service (`SimMpu6050` behind `Mpu6050`), its own process.
Prints one JSON line of counters per second on stdout: what bench/efficiency.py measures.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from pathlib import Path

from wilo_backend.sensor.clock import MonotonicClock
from wilo_backend.sensor.mpu6050 import Mpu6050, plan_setup
from wilo_backend.sensor.sim import SimMpu6050

PERIOD_S = 1 / 800


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    clock = MonotonicClock()
    driver = Mpu6050(SimMpu6050(clock), clock)
    driver.configure(plan_setup("polled", "resample", 2))
    rows: list[tuple[float, float, float, float]] = []
    lock = threading.Lock()
    stored = 0

    def sample() -> None:  # the loop: read, append, sleep what is left of the period
        while True:
            started = time.monotonic()
            x, y, z = (v * driver.scale_ms2 for v in driver.read_accel())
            with lock:
                rows.append((time.time(), x, y, z))
            time.sleep(max(0.0, PERIOD_S - (time.monotonic() - started)))

    threading.Thread(target=sample, daemon=True).start()
    while True:
        time.sleep(1.0)
        with lock:
            taken = rows[:]
            rows.clear()
        lines = ["timestamp,x,y,z,acceleration\n"]
        for t, x, y, z in taken:
            stamp = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            lines.append(f"{stamp},{x:.6f},{y:.6f},{z:.6f},{(x * x + y * y + z * z) ** 0.5:.6f}\n")
        path = folder / f"{time.strftime('%Y%m%d_%H%M%S')}.csv"
        path.write_text("".join(lines))
        stored += len(taken)
        for old in sorted(folder.glob("*.csv"))[:-120]:  # 120 files retained, as the seed said
            old.unlink()
        print(json.dumps({"stored": stored, "time": time.time()}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
