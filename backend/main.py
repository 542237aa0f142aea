"""Shim so the seed's `python main.py` (from backend/) still starts the service."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wilo_backend.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
