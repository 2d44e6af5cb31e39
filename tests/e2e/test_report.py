"""`vowvault report --html FILE` renders in headless Chromium without a console error,
with its charts drawn from real backups and drills."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from policytext import apply_photos_policy

from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.drill import run_drill

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message that is an error."""
    proc = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    errors = [ln for ln in console if re.search(r"ERROR|Uncaught|error", ln)]
    return proc.stdout, errors


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_report_renders_without_console_errors(ctx: Context, cli, tmp_path: Path,
                                               cli_env: dict[str, str]) -> None:
    # Real data: two weeks of backups, one failure, two drills; in the CLI's own catalog.
    from vowvault.settings import Settings

    home = Path(cli_env["VOWVAULT_HOME"])
    ctx.close()
    ctx = Context.from_settings(Settings(home=home, database_url=f"sqlite:///{home}/catalog.db",
                                         actor="t"))
    now = {"t": dt.datetime.now(dt.UTC) - dt.timedelta(days=14)}
    ctx.clock = lambda: now["t"]
    src = tmp_path / "src"
    src.mkdir()
    apply_photos_policy(ctx.catalog, src, f"file://{tmp_path}/storage")
    for day in range(14):
        now["t"] += dt.timedelta(days=1)
        (src / f"IMG_{day}.jpg").write_bytes(bytes([day]) * 50_000)
        run_backup(ctx, "photos")
        if day in (5, 12):
            run_drill(ctx, "photos")
    ctx.close()
    out = tmp_path / "report.html"
    cli("report", "--html", str(out), "--days", "21")
    html = out.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    dom, errors = render(out, tmp_path / "profile")
    assert errors == []
    assert "vowvault report (21 days)" in dom  # the page's script ran
    assert dom.count('class="pt"') == 14 and dom.count('class="ok"') == 2
    assert "forecast (90 days)" in dom and "photos" in dom


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_the_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    _dom, errors = render(broken, tmp_path / "profile")
    assert errors and "undefinedFunction" in " ".join(errors)
