"""`python -m wilo_backend.appliance.firstboot`: read, check and apply the card's settings.

Run once by the image's wilo-firstboot.service (image/firstboot/). Exit 0: applied; exit 2: the
settings file is missing or bad, nothing was applied, and each problem is printed (to the
console and the journal through the unit) so the operator can fix the file and reboot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from .apply import apply
from .settings import SETTINGS_FILE_NAME, SettingsError, read_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wilo-firstboot", description=__doc__)
    parser.add_argument(
        "--settings", type=Path, default=Path("/boot/firmware") / SETTINGS_FILE_NAME
    )
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument(
        "--zoneinfo", type=Path, default=None, help="default <root>/usr/share/zoneinfo"
    )
    args = parser.parse_args(argv)
    zoneinfo = args.zoneinfo or args.root / "usr/share/zoneinfo"
    try:
        settings = read_settings(args.settings, zoneinfo=zoneinfo)
        written = apply(args.root, settings)
    except SettingsError as exc:
        print(f"wilo-firstboot: settings NOT applied, fix {args.settings}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"wilo-firstboot:   {problem}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(
            f"wilo-firstboot: settings NOT applied, the service config rejects them: {exc}",
            file=sys.stderr,
        )
        return 2
    for path in written:
        print(f"wilo-firstboot: wrote {path}", file=sys.stderr)
    print(f"wilo-firstboot: settings applied (hostname {settings.hostname})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
