"""The dashboard in a real headless browser, on a live ``pilotfish serve`` with a live agent.

Debian's ``chromium`` and ``chromium-driver`` drive the page through selenium (``.ci/run``
installs them when missing). The control plane and the agent run as processes, as shipped;
traffic goes through the agent, which reports it to the control plane every second; a port
held by the test makes the agent NACK a listener; a hostile client NACKs with markup in its
node id and message, and a config file puts markup in a diagnostic: the page must show all of
it as text. Set ``PILOTFISH_DASHBOARD_SCREENSHOT`` to a path to keep the final screenshot
(``docs/dashboard.png`` is made this way).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.agents.live_support import (
    HOST,
    Client,
    backends,
    child_env,
    eventually,
    free_port,
    hello_mesh,
    split_service,
    subsets_rule,
    write_atomically,
)
from tests.agents.test_live_nack import other_service
from tests.server.test_admin import connect

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1280,900",
)
HOSTILE_NODE = '<img src=x onerror="window.pwned = 1">'
HOSTILE_NACK = 'refused: <b id="injected">bold</b> <script>window.pwned = 2</script>'
HOSTILE_FIELD = "<img src=x onerror=alert(1)>"
BAD_FILE = "<i>bad.yaml"
BAD_EDIT = (
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata:\n  name: x\n  namespace: default\n"
    f'spec:\n  hosts: [x]\n  "{HOSTILE_FIELD}": 1\n'
)


def _browser_or_skip() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("PILOTFISH_BROWSER_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pilotfish-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER)
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        process = service.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
        for pid in browser_pids(profile):  # left behind if quit() failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)


def browser_pids(profile: str) -> list[int]:
    """Chromium processes started with this test's own profile directory."""
    marker = f"--user-data-dir={profile}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


async def wait_until(driver: Any, check: Callable[[Any], Any], timeout: float = 30.0) -> Any:
    """``check(driver)`` once truthy (polled in a thread: the test's loop serves backends)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.2)
    try:
        return await asyncio.to_thread(wait.until, check)
    except TimeoutException:
        raise AssertionError(f"the page never showed it; it shows:\n{page_text(driver)}") from None


def page_text(driver: Any) -> str:
    text: str = driver.execute_script("return document.body.innerText")
    return text


def text_of(selector: str) -> Callable[[Any], str | None]:
    def read(driver: Any) -> str | None:
        text: str | None = driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            selector,
        )
        return text

    return read


def texts_of(driver: Any, selector: str) -> list[str]:
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)", selector
    )
    return found


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat = 8, b""
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) in ((8, 2, 0), (8, 6, 0))
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[bytes] = []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + best) & 0xFF
        pixels.extend(bytes(line[i : i + 3]) for i in range(0, stride, channels))
        previous = line
    return width, height, pixels


def serve(config: Path, workdir: Path, xds: int, admin: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "controlplane",
        "serve",
        "--config-dir",
        str(config),
        "--xds-address",
        f"127.0.0.1:{xds}",
        "--admin-address",
        f"127.0.0.1:{admin}",
        "--load-report-interval",
        "1s",
        "--debounce",
        "20ms",
        "--settle",
        "10ms",
        "--max-delay",
        "100ms",
        "--state-dir",
        str(workdir / "state"),
        "--log-format",
        "json",
        "--grace",
        "100ms",
    ]
    with (workdir / "serve.log").open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=child_env())


def start_agent(xds: int, admin: int, workdir: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "agents",
        "--xds-server",
        f"127.0.0.1:{xds}",
        "--node-id",
        "sidecar-1",
        "--admin-address",
        f"127.0.0.1:{admin}",
        "--connect-timeout",
        "15s",
        "--log-format",
        "json",
    ]
    with (workdir / "agent.log").open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=child_env())


async def answers(port: int, path: str) -> bool:
    try:
        client = Client(port, "admin")
        try:
            response = await asyncio.wait_for(client.request(path), 2)
            return response.status == 200
        finally:
            await client.close()
    except (OSError, TimeoutError):
        return False


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(5)


async def send(client: Client, count: int) -> None:
    for _ in range(count):
        response = await asyncio.wait_for(client.request("/"), 5)
        assert (response.status, response.backend) == (200, "a")


async def test_the_dashboard_shows_proxies_nacks_live_traffic_and_errors_in_a_real_browser(
    tmp_path: Path,
) -> None:
    _browser_or_skip()
    port, taken = free_port(), free_port()
    xds, admin, agent_admin = free_port(), free_port(), free_port()
    served = agent = None
    holder = socket.socket()
    async with backends("a") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        (config / "rule.yaml").write_text(subsets_rule(["a"]))
        (config / "routes.yaml").write_text(split_service({"a": 100}))
        client = Client(port, HOST)
        try:
            served = serve(config, tmp_path, xds, admin)
            await eventually(lambda: answers(admin, "/readyz"), timeout=30)
            agent = start_agent(xds, agent_admin, tmp_path)
            await eventually(lambda: answers(agent_admin, "/ready"), timeout=30)

            with browser() as driver:
                await asyncio.to_thread(driver.get, f"http://127.0.0.1:{admin}/")
                await wait_until(driver, lambda d: text_of("#live")(d).startswith("live"))
                node = 'tr[data-node="sidecar-1"]'
                await wait_until(
                    driver,
                    lambda d: d.execute_script(
                        "const r = document.querySelector(arguments[0]);"
                        "return r && r.dataset.state === 'SYNCED'",
                        node,
                    ),
                )
                assert [t.split(" ")[0] for t in texts_of(driver, f"{node} td[data-type]")] == [
                    "SYNCED"
                ] * 4

                # markup from a proxy is shown as text, never run or parsed
                async with grpc.aio.insecure_channel(f"127.0.0.1:{xds}") as channel:
                    call = await connect(channel, HOSTILE_NODE, HOSTILE_NACK)
                    await wait_until(
                        driver, lambda d: HOSTILE_NACK in texts_of(d, "tr[data-nack] .reason")
                    )
                    assert HOSTILE_NODE in texts_of(driver, "#proxies tr[data-node] strong")
                    assert driver.execute_script(
                        "return [document.getElementById('injected'), window.pwned,"
                        " document.querySelectorAll('main img, main script').length]"
                    ) == [None, None, 0]
                    call.cancel()
                await wait_until(driver, lambda d: not texts_of(d, "tr[data-nack]"), timeout=15)

                # the agent refuses a listener on a port the test holds: its reason is shown
                holder.bind(("127.0.0.1", taken))
                holder.listen()
                write_atomically(config / "other.yaml", other_service("other", taken))
                reason = 'tr[data-nack="sidecar-1"] .reason'
                shown = await wait_until(driver, text_of(reason))
                assert shown.startswith(f"Listener 127.0.0.1_{taken}: address: cannot listen: ")
                row_state = f'{node}[data-state="NACKED"] td[data-type="LDS"]'
                assert text_of(row_state)(driver).startswith("NACKED")

                # traffic through the agent is reported every second and shown per service
                row = f'tr[data-service="{HOST}"]'
                await send(client, 50)
                await wait_until(driver, lambda d: text_of(f"{row} .issued")(d) == "50")
                first = float(text_of(f"{row} .rps")(driver) or 0)
                assert first > 0
                # the host reads whole, and a narrow column breaks it only after a dot
                assert text_of(f"{row} strong")(driver) == HOST
                breaks = driver.execute_script(
                    "return document.querySelectorAll(arguments[0]).length", f"{row} strong wbr"
                )
                assert breaks == HOST.count(".")
                await send(client, 450)
                await wait_until(driver, lambda d: text_of(f"{row} .issued")(d) == "500")
                await wait_until(driver, lambda d: float(text_of(f"{row} .rps")(d)) != first)

                # a bad edit: its diagnostic, markup and all, as text
                write_atomically(config / BAD_FILE, BAD_EDIT)
                diagnostic = '.diag[data-code="PF110"]'
                where = await wait_until(driver, text_of(f"{diagnostic} .where"))
                assert where.endswith(f"{BAD_FILE}:8:3")
                message = text_of(f"{diagnostic} .msg")(driver)
                assert message == f"unknown field '{HOSTILE_FIELD}' in VirtualService; remove it"
                assert (
                    driver.execute_script(
                        "return document.querySelectorAll('main img, main i').length"
                    )
                    == 0
                )

                await asyncio.sleep(5.5)  # the page re-renders ages every 5 s: still no error
                logs = driver.get_log("browser")
                assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs

                png = driver.get_screenshot_as_png()
                keep = os.environ.get("PILOTFISH_DASHBOARD_SCREENSHOT")
                if keep:
                    Path(keep).write_bytes(png)
            width, height, pixels = png_pixels(png)
            assert width >= 1000 and height >= 600
            colours: dict[bytes, int] = {}
            for pixel in pixels:
                colours[pixel] = colours.get(pixel, 0) + 1
            assert len(colours) > 50
            assert max(colours.values()) < 0.95 * len(pixels)
        finally:
            holder.close()
            await client.close()
            stop(agent)
            stop(served)
