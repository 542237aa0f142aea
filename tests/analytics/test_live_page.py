"""The live page in headless Chromium against the real service (`wilo-backend run --sensor sim`).

Debian's chromium (`make browser`) driven by Playwright; Playwright's own browser download does
not work here, so the executable is given. Set WILO_UPDATE_SCREENSHOT=1 to refresh
docs/live-view.png from this run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "page-test-token"
# 0.3 m/s² at 24.5 Hz plus the simulator's harmonics: ≈ 1.4 mm/s on X, zone B.
SIM_ENV = {
    "WILO_SENSOR_SIM_VIBRATION_MS2": "0.3",
    "WILO_SERVER_AUTH_TOKEN": TOKEN,
    "WILO_SERVER_PROTECT_READS": "true",
    "WILO_SAMPLER_RT_PRIORITY": "0",
    "WILO_SAMPLER_CPU": "none",
}
REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """`wilo-backend run` on 127.0.0.1 port 0; the bound port is read from its log."""

    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WILO_")}
        env.update(SIM_ENV)
        command = [sys.executable, "-m", "wilo_backend.cli", "run", "--sensor", "sim"]
        command += ["--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", "0"]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.log: list[str] = []
        self.port: int | None = None
        self._port_seen = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            found = re.search(r"listening on [\d.]+:(\d+)", line)
            if found and self.port is None:
                self.port = int(found[1])
                self._port_seen.set()
        self._port_seen.set()

    def wait_port(self, timeout_s: float) -> int:
        self._port_seen.wait(timeout_s)
        assert self.port is not None, "service did not start:\n" + "".join(self.log[-30:])
        return self.port

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp_path / "data")
    try:
        yield running
    finally:
        running.stop()


def wait_for(page: Page, script: str, timeout_s: float = 20.0) -> None:
    page.wait_for_function(script, timeout=timeout_s * 1000)


def test_live_page_shows_waveform_spectrum_zone_and_health(
    service: ServiceProcess, tmp_path: Path
) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser`"
    port = service.wait_port(30)
    # The page and its assets come from the service itself, nothing from elsewhere.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/html")
        html = reply.read().decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(assets) == ["app.js", "style.css"]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1100},
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
            wait_for(page, "document.getElementById('connection').dataset.state === 'open'")
            # the waveform is redrawn as live frames arrive...
            wait_for(page, "Number(document.getElementById('waveform').dataset.updates) >= 3")
            first = page.eval_on_selector("#waveform", "c => c.toDataURL()")
            updates = int(page.eval_on_selector("#waveform", "c => c.dataset.updates"))
            wait_for(
                page,
                f"Number(document.getElementById('waveform').dataset.updates) >= {updates + 5}",
            )
            assert page.eval_on_selector("#waveform", "c => c.toDataURL()") != first
            # ...the spectrum's peak sits at the simulator's 24.5 Hz...
            wait_for(page, "document.getElementById('spectrum-peak').dataset.hz !== ''")
            peak_hz = float(page.get_attribute("#spectrum-peak", "data-hz") or "nan")
            assert abs(peak_hz - 24.5) <= 0.5
            # ...the zone is the one the simulated vibration belongs in...
            wait_for(page, "document.getElementById('zone').dataset.zone !== ''")
            assert page.get_attribute("#zone", "data-zone") == "B"
            vrms = float(page.text_content("#vrms") or "nan")
            assert 1.0 < vrms < 1.8
            # ...with the features table, the trend and the sampler's health filled in
            assert page.locator("#features tbody tr").count() == 4
            wait_for(page, "document.querySelectorAll('#health dt').length >= 5")
            health = page.text_content("#health") or ""
            assert "connected" in health
            rate = re.search(r"sampling rate([\d.]+) Hz", health)
            # the page shows the sampler's measured rate; its value is a benchmark figure, not
            # asserted here (a loaded CI machine starts slowly)
            assert rate is not None and float(rate[1]) > 0
            assert errors == []
            shot = tmp_path / "live-view.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("WILO_UPDATE_SCREENSHOT") == "1":
                (REPO / "docs").mkdir(exist_ok=True)
                shutil.copyfile(shot, REPO / "docs" / "live-view.png")

            # Without the token the page says so instead of showing data.
            locked = context.new_page()
            locked.goto(f"http://127.0.0.1:{port}/")
            wait_for(
                locked,
                "document.getElementById('connection').dataset.state === 'unauthorized'",
            )
            assert locked.eval_on_selector("#waveform", "c => c.dataset.updates") == "0"
        finally:
            context.close()
    assert any("vibration zone B at start" in line for line in service.log)
