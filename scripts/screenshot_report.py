"""Render a ``squeezelab report`` page in headless Chromium and save a PNG screenshot: a look
at the page as a reader's browser draws it, with the network shut off (every host name fails
to resolve), so what shows is what the self-contained page holds.

    python scripts/screenshot_report.py report/report.html -o report/screenshot.png

Needs a Chromium or Chrome binary (Debian: ``apt-get install chromium``); not part of the
test suite or CI, which check the page without a browser (tests/workflows/test_report.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser(name: str | None) -> str:
    """The browser binary: ``name`` if given, else the first of BROWSERS on the PATH."""
    for candidate in ([name] if name else BROWSERS):
        found = shutil.which(candidate)
        if found:
            return found
    raise SystemExit(f"error: no browser found (tried {', '.join([name] if name else BROWSERS)}); "
                     "install one (Debian: apt-get install chromium) or give --browser")


def screenshot(html: Path, output: Path, *, browser: str, width: int, height: int,
               timeout_s: float) -> Path:
    """Draw ``html`` at ``width`` x ``height`` pixels into ``output`` (PNG) and return it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="squeezelab-chromium-") as profile:
        command = [
            browser, "--headless", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
            # offline: any host name fails, so a page that fetched anything would show it
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--window-size={width},{height}", f"--screenshot={output.resolve()}",
            html.resolve().as_uri(),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with it
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0 or not output.is_file():
        raise SystemExit(f"error: {Path(browser).name} exited with {result.returncode} and "
                         f"wrote no screenshot:\n{result.stderr.strip()[-2000:]}")
    return output


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("html", type=Path, help="the report page (report.html)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="the PNG to write (default: screenshot.png beside the page)")
    p.add_argument("--width", type=int, default=1280, help="window width in pixels")
    p.add_argument("--height", type=int, default=4000,
                   help="window height in pixels: the screenshot shows this much of the page")
    p.add_argument("--browser", default=None, help="the browser binary (default: the first of "
                   f"{', '.join(BROWSERS)} found)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the browser")
    args = p.parse_args(argv)
    if not args.html.is_file():
        print(f"error: {args.html} is not a file (give the report.html that squeezelab report "
              "wrote)", file=sys.stderr)
        return 2
    output = args.output or args.html.with_name("screenshot.png")
    path = screenshot(args.html, output, browser=find_browser(args.browser), width=args.width,
                      height=args.height, timeout_s=args.timeout)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
