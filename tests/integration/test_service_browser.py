"""The dashboard in a real headless Chromium (Debian's, driven by Playwright; never a downloaded
browser): sign in, watch a server replicate live, run a test migration through its confirmation.

Set GODWIT_SCREENSHOTS=DIR to keep the screenshots (docs/dashboard*.png were made so).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.service.harness import create_token, done, make_project, running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.mark.slow
def test_dashboard_in_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed: `apt-get install -y chromium`", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    project = make_project(tmp_path, None, servers=("web", "db"), size=8 << 20)
    toml = project / "godwit.toml"
    toml.write_text(toml.read_text().replace("# max_mbps = 100", "max_mbps = 4", 1))  # the initial cycle takes seconds
    operator = create_token(project, "browser", "operator")
    shots = Path(os.environ.get("GODWIT_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with running(project, "--mover-interval", "0.3") as svc, sync_playwright() as pw:
        # launch() gives the browser a fresh temporary profile of its own
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
            page.goto(f"{svc.url}/ui")
            page.get_by_label("API token").fill(operator)
            page.get_by_role("button", name="Sign in").click()
            row = page.locator('tr[data-server="web"]')
            expect(row.locator('[data-key="state"]')).to_have_text("added")
            with svc.client(operator) as api:
                starting = api.put("/api/v1/replications/web", json={"enabled": True})  # 202: runs in the service
                expect(row.locator('[data-key="state"]')).to_have_text("replicating", timeout=15_000)  # live
                page.screenshot(path=str(shots / "dashboard-replicating.png"))
                done(api, starting)
            expect(row.locator('[data-key="point"]')).to_have_text("1", timeout=30_000)  # applied, no reload
            expect(row.get_by_role("progressbar")).to_have_attribute("value", "1")
            with svc.client(operator) as api:  # two more cycles: the charts get a line
                for _ in range(2):
                    done(api, api.post("/api/v1/replications/web/cycles"))
            expect(row.locator('[data-key="last_cycle"]')).to_have_text("3", timeout=15_000)
            expect(row.locator('svg[data-chart="rpo"]')).to_have_attribute(
                "aria-label", re.compile(r"^seconds between the last commits: \d+, \d+$"))
            page.screenshot(path=str(shots / "dashboard.png"))
            page.get_by_role("button", name="Test migrate: web").click()
            expect(page.get_by_role("heading")).to_have_text("Test migrate: web")
            page.screenshot(path=str(shots / "dashboard-confirm.png"))
            page.get_by_role("button", name="Confirm: Test migrate").click()
            expect(page).to_have_url(re.compile(r"/ui/operations/\d+$"))  # the operation's page, live by SSE
            status = page.get_by_role("status")
            expect(status).to_contain_text(re.compile(r"Test migration of web at recovery point [13] written"),
                                           timeout=30_000)
            page.screenshot(path=str(shots / "dashboard-operation.png"))
            written = Path(status.inner_text().split("written: ", 1)[1].strip())
            assert written.read_bytes() == (tmp_path / "web.raw").read_bytes()
            page.get_by_role("link", name="Back to the servers").click()
            expect(page.locator('tr[data-server="db"] [data-key="state"]')).to_have_text("added")
        finally:
            browser.close()
