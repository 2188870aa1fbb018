"""The dashboard in a real Chromium (Debian's, driven by Playwright): watch a run's logs arrive
live, approve its gate from the page, and see it finish."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import ADMIN, server_config
from helpers import fn
from live_server import LiveServer, serve_in_thread
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from stageflow.server.app import create_server_app
from stageflow.settings import WorkerSettings
from stageflow.transfer.store import ContentStore
from stageflow.worker.lifecycle import WorkerLifecycle
from stageflow.worker.runner import StageWorker

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def live(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("dashboard")
    address = temporal_env.client.service_client.config.target_host
    config = server_config(f"sqlite:///{home / 'control.db'}", home, address)
    app = create_server_app(
        ContentStore(home / "server"), token=ADMIN, max_upload_bytes=1 << 20, control=config
    )
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_watch_logs_live_approve_from_the_page_and_see_it_finish(
    live: LiveServer, client: Client, queue: str, tmp_path: Path, page
) -> None:
    import httpx

    spec = (
        "name: gated_ui\n"
        "stages:\n"
        "  talk:\n"
        f"    queue: {queue}\n"
        "    uses: python\n"
        f"    with: {{function: '{fn('chatty')}', lines: 6, delay: 0.4}}\n"
        "  ship:\n"
        "    needs: [talk]\n"
        f"    queue: {queue}\n"
        "    gate: approve\n"
        "    uses: python\n"
        f"    with: {{function: '{fn('chatty')}', lines: 2, delay: 0.1}}\n"
    )
    settings = WorkerSettings(server_url=live.url, heartbeat_interval=1.0)
    lifecycle = WorkerLifecycle(
        worker_id="ui-worker",
        queues=[queue],
        tags=[],
        staging_dir=tmp_path / "staging",
        data_url=None,
        token=ADMIN,
        settings=settings,
    )
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/yaml"}
    async with (
        lifecycle,
        StageWorker(client, task_queues=[queue], settings=settings, identity="ui-worker"),
    ):
        async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=30) as http:
            registered = await http.post("/api/v1/pipelines", content=spec)
            assert registered.status_code in (200, 201), registered.text
            started = await http.post(
                "/api/v1/pipelines/gated_ui/runs",
                json={},
                headers={"Content-Type": "application/json"},
            )
            assert started.status_code == 201, started.text
            run_id = started.json()["run_id"]

        await page.goto(f"{live.url}/ui/")
        await page.fill("#token", ADMIN)
        await page.click("#login-form button")
        await page.goto(f"{live.url}/ui/#/runs/{run_id}")
        logs = page.locator("#logs")
        # Lines arrive while the stage is still running: the first shows before the last.
        await logs.get_by_text("chatty line 1 of 6").wait_for(timeout=30_000)
        assert await logs.get_by_text("chatty line 6 of 6").count() == 0
        await logs.get_by_text("chatty line 6 of 6").wait_for(timeout=30_000)
        approve = page.locator("#approve-ship")
        await approve.wait_for(timeout=30_000)
        assert (
            await page.locator('#graph g[data-stage="ship"]').get_attribute("data-status")
            == "waiting_approval"
        )
        await approve.click()
        await page.locator('h2 .status[data-status="succeeded"]').wait_for(timeout=30_000)
        await logs.get_by_text("chatty line 2 of 2").wait_for(timeout=30_000)
        assert (
            await page.locator('#graph g[data-stage="ship"]').get_attribute("data-status")
            == "succeeded"
        )
        await page.goto(f"{live.url}/ui/#/workers")
        await page.locator('#workers tr[data-worker="ui-worker"] .status').wait_for(timeout=30_000)
