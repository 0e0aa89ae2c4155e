"""The sheet as PDF: headless Chromium prints the self-contained page with its print stylesheet."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def print_pdf(html_path: Path, pdf_path: Path, *, browser: str | None = None, timeout_s: float = 120) -> None:
    """Headless Chromium prints the page with its print stylesheet (A4, no header or footer)."""
    browser = browser or chromium()
    if browser is None:
        raise SystemExit("quartier sheet: --pdf needs Chromium (sudo apt-get install chromium); "
                         "or open the HTML file in a browser and print it to PDF")
    with tempfile.TemporaryDirectory(prefix="quartier-sheet-") as profile:
        cmd = [browser, "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--no-pdf-header-footer", f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()]
        if os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not pdf_path.exists() or pdf_path.stat().st_size == 0:
        raise SystemExit(f"quartier sheet: Chromium could not print {pdf_path}: {proc.stderr.strip()[-300:]}")
