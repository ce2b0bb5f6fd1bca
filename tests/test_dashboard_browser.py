"""The dashboard in a real headless browser (issue 7, item 2): Debian's chromium loads the page from
the API, draws the charts from the event stream's snapshot, and redraws when a round is published.

The test drives chromium through the DevTools protocol (a WebSocket, spoken with aiohttp's client):
it reads the live DOM with ``Runtime.evaluate`` and saves a screenshot with ``Page.captureScreenshot``
(set ``CLIPFL_SCREENSHOT_DIR`` to keep it). Chromium is installed with apt-get when missing; the test
skips, saying why, when that is impossible (not root, no apt-get, no package).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clipfl.ops import EventBus, serve_api

pytestmark = pytest.mark.slow

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")


def _install_chromium() -> str:
    """The chromium binary, installing Debian's package if needed; skips, saying why, if impossible."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be: installing it needs root and apt-get")
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    # A fresh machine may have no package lists yet: install, and if that fails, update and retry.
    error = ""
    for cmd in (install, ["apt-get", "update", "-q"], install):
        ok, error = _apt(cmd)
        if ok and cmd is install and (found := shutil.which("chromium")):
            return found
    pytest.skip(f"could not install chromium with apt-get: {error}")


def _apt(cmd: list[str]) -> tuple[bool, str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return False, f"{' '.join(cmd)} did not finish within 15 minutes"
    return done.returncode == 0, (done.stderr or done.stdout)[-400:]


@pytest.fixture(scope="session")
def chromium() -> str:
    return _install_chromium()


class FakeView:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {
            "round": 0,
            "stage": "fit",
            "clients_connected": 10,
            "clients_registered": 10,
            "clients_dropped": 0,
            "rounds_total": 10,
            "config": {"dataset": "digits", "clients": 10, "secagg": True, "mitigation": "clip"},
            "started_at": 0.0,
        }
        self.rows: list[dict[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return dict(self.state)

    def rounds(self) -> list[dict[str, Any]]:
        return list(self.rows)

    def counters(self) -> dict[str, float]:
        return {"rounds_completed": len(self.rows), "clients_connected": 10}

    def complete_round(self, bus: EventBus, rnd: int) -> None:
        """A plausible digits round: accuracy rising, one client dropped every third round, CLIP fields."""
        for i, stage in enumerate(STAGES):
            bus.publish(
                {"event": "stage", "round": rnd, "stage": stage, "seconds": 0.05 * (i + 1) + 0.01 * rnd}
            )
        failures = {7: "deadline"} if rnd % 3 == 0 else {}
        row = {
            "round": rnd,
            "round_seconds": 1.2 + 0.1 * (rnd % 4),
            "elapsed_seconds": 1.5 * rnd,
            "test_accuracy": 0.95 - 0.8 * 0.7**rnd,
            "test_loss": 2.0 * 0.7**rnd,
            "participants": [c for c in range(10) if c not in failures],
            "failures": failures,
            "selected": list(range(10)),
            "stragglers": [2, 5] if rnd % 2 else [2],
            "mean_keep_ratio": 0.9 - 0.02 * rnd,
        }
        self.rows.append(row)
        self.state.update(round=rnd, clients_dropped=len(failures))
        bus.publish({"event": "round", **row})


# Resolves with the expression's value once it is truthy, re-checked on every change of the DOM.
_WHEN = """new Promise((resolve) => {
  const test = () => { try { return (%s); } catch (e) { return false; } };
  const now = test();
  if (now) return resolve(now);
  const watch = new MutationObserver(() => { const v = test(); if (v) { watch.disconnect(); resolve(v); } });
  watch.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
})"""


class DevTools:
    """The smallest DevTools-protocol client: send a command, wait for the reply with its id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._seen: set[str] = set()  # protocol events that arrived while waiting for replies

    async def _next(self) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads((await self._ws.receive()).data)
        if "method" in reply:
            self._seen.add(reply["method"])
        return reply

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self._ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            reply = await self._next()
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    async def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event, so later evaluations run in the new document."""
        await self.call("Page.enable")
        self._seen.discard("Page.loadEventFired")
        await self.call("Page.navigate", url=url)
        while "Page.loadEventFired" not in self._seen:
            await self._next()

    async def evaluate(self, expression: str, *, wait: bool = False) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=wait
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, seconds: float = 30.0) -> Any:
        """Wait until ``expression`` holds in the page; the deadline only turns a hang into a failure."""
        try:
            async with asyncio.timeout(seconds):
                return await self.evaluate(_WHEN % expression, wait=True)
        except TimeoutError:
            state = await self.evaluate("JSON.stringify(document.body.dataset)")
            raise AssertionError(f"the page never showed {what} (body data: {state})") from None


@pytest.fixture
async def browser(chromium: str, tmp_path: Path) -> AsyncIterator[tuple[Any, int]]:
    """Start chromium with a remote-debugging port; yield (process, port)."""
    proc = await asyncio.create_subprocess_exec(
        chromium,
        *FLAGS,
        "--remote-debugging-port=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1500",
        "--hide-scrollbars",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stderr.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("chromium exited before opening its DevTools port")
                if m := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
                    break
        drain = asyncio.ensure_future(proc.stderr.read())  # keep chromium's stderr from filling up
        yield proc, int(m.group(1))
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_dashboard_draws_the_charts_and_updates_live(browser: tuple[Any, int], tmp_path: Path) -> None:
    _, devtools_port = browser
    view, bus = FakeView(), EventBus()
    for rnd in range(1, 7):
        view.complete_round(bus, rnd)
    async with serve_api(view, bus) as port, aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{devtools_port}/json/list") as resp:
            pages = [t for t in await resp.json() if t["type"] == "page"]
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = DevTools(ws)
            await cdp.navigate(f"http://127.0.0.1:{port}/")
            await cdp.wait_for("document.body.dataset.live === '1'", "a live event stream")
            await cdp.wait_for("document.body.dataset.rounds === '6'", "the six rounds of the snapshot")

            points = """Object.fromEntries([...document.querySelectorAll('svg.chart')].map(
                s => [s.id, Number(s.dataset.points || 0)]))"""
            drawn = await cdp.evaluate(points)
            assert drawn == {
                "chart-accuracy": 6,
                "chart-duration": 6,
                "chart-clients": 12,  # participants and dropped, one point each per round
                "chart-stages": 6,
                "chart-stragglers": 6,
                "chart-keep": 6,
            }
            assert await cdp.evaluate("document.getElementById('card-stragglers').hidden") is False
            assert await cdp.evaluate("document.querySelectorAll('#chart-stages rect').length") >= 6 * 4
            assert await cdp.evaluate("document.getElementById('round').textContent") == "6 / 10"

            view.complete_round(bus, 7)
            bus.publish({"event": "status", "stage": "masked_input", "clients_connected": 9})
            await cdp.wait_for("document.body.dataset.rounds === '7'", "the round published after loading")
            await cdp.wait_for(
                "document.getElementById('stage').textContent === 'masked_input'", "the new stage"
            )
            assert (await cdp.evaluate(points))["chart-accuracy"] == 7
            tiles = await cdp.evaluate(
                "['round','connected','accuracy'].map(id => document.getElementById(id).textContent)"
            )
            assert tiles == ["7 / 10", "9", f"{(0.95 - 0.8 * 0.7**7) * 100:.1f} %"]

            shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            png = base64.b64decode(shot["data"])
            assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
            _save(png, tmp_path)


def _save(png: bytes, tmp_path: Path) -> None:
    (tmp_path / "dashboard.png").write_bytes(png)
    if keep := os.environ.get("CLIPFL_SCREENSHOT_DIR"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "dashboard.png").write_bytes(png)
