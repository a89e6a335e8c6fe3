#!/usr/bin/env python3
"""Screenshot an HTML file with headless Chromium (used for the README image).

    python scripts/screenshot.py collapse-audit-out/report.html docs/report.png [--width 1280] [--height 2000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import browser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2000)
    a = ap.parse_args(argv)
    if not a.html.is_file():
        print(f"screenshot: {a.html}: no such file", file=sys.stderr)
        return 2
    if browser.chromium() is None:
        print("screenshot: chromium is not installed (apt-get install chromium, or `make browser`)", file=sys.stderr)
        return 2
    png = browser.screenshot(a.html, a.png, size=(a.width, a.height))
    st = browser.png_stats(png)
    print(f"{png} ({st['size'][0]}x{st['size'][1]}, {st['n_colours']} colours)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
