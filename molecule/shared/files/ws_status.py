"""Ask a test host's wilo-backend for get_status twice; exit 1 unless total_samples grows."""

import argparse
import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.client import connect


async def get_status(url: str, timeout_s: float) -> dict[str, Any]:
    """One get_status round trip on a fresh connection; skips pushed frames of other types."""
    async with asyncio.timeout(timeout_s), connect(url) as ws:
        await ws.send(json.dumps({"command": "get_status", "request_id": "molecule"}))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("type") == "status" and reply.get("request_id") == "molecule":
                data: dict[str, Any] = reply["data"]
                return data


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="e.g. ws://10.200.21.2:8765/")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between the two asks")
    args = parser.parse_args()
    first = await get_status(args.url, 10.0)
    await asyncio.sleep(args.interval)
    second = await get_status(args.url, 10.0)
    grown = second["total_samples"] - first["total_samples"]
    print(json.dumps({"first": first, "second": second, "samples_in_interval": grown}, default=str))
    if not (first.get("running") and second.get("running")):
        print("status says not running", file=sys.stderr)
        return 1
    if grown <= 0:
        print(f"total_samples did not grow in {args.interval} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
