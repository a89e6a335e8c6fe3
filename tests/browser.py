"""Drive headless Chromium for the report tests, with the standard library only.

- :func:`dump_dom` and :func:`screenshot` use Chromium's own command-line
  switches (``--dump-dom``, ``--screenshot``).
- :func:`inspect_page` speaks the DevTools protocol over a websocket (a
  minimal RFC 6455 client below) to collect console errors, uncaught
  exceptions, JavaScript dialogs and every network request the page makes,
  and to run a few probes in the page.

Every launch uses a fresh ``--user-data-dir`` and the switches that keep
Chromium from phoning home, so the only requests seen are the page's own.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
]


def chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or ``None`` (tests skip then)."""
    env = os.environ.get("COLLAPSE_AUDIT_CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium; or `make browser`)")
    with tempfile.TemporaryDirectory(prefix="ca-chromium-") as udd:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={udd}", *args], capture_output=True, text=True, timeout=timeout)


def dump_dom(html: str | os.PathLike, timeout: float = 60) -> str:
    """The DOM after load (scripts run) as serialised HTML."""
    url = Path(html).resolve().as_uri()
    cp = _run(["--virtual-time-budget=2000", "--dump-dom", url], timeout)
    if cp.returncode != 0 or not cp.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom failed ({cp.returncode}): {cp.stderr[-500:]}")
    return cp.stdout


def screenshot(html: str | os.PathLike, png: str | os.PathLike, size: tuple[int, int] = (1280, 2000), timeout: float = 60) -> Path:
    """A PNG screenshot of the page's top ``size`` pixels."""
    url = Path(html).resolve().as_uri()
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    cp = _run([f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=2000", url], timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium --screenshot failed ({cp.returncode}): {cp.stderr[-500:]}")
    return png


# --------------------------------------------------------------------------- websocket (RFC 6455), client side
class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, masking, fragments, ping/close."""

    def __init__(self, url: str, timeout: float = 30):
        assert url.startswith("ws://"), url
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port or 80)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._recv_exact(2)
            opcode, fin = b0 & 0x0F, b0 & 0x80
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b1 & 0x80 else None
            data = self._recv_exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, data)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by peer")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if fin:
                    return b"".join(parts).decode("utf-8", "replace")

    def settimeout(self, t: float | None) -> None:
        self.sock.settimeout(t)

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


# --------------------------------------------------------------------------- DevTools
class DevTools:
    """One page target of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._on_event(msg)
        raise TimeoutError(method)

    def _on_event(self, msg: dict) -> None:
        self.events.append(msg)
        if msg["method"] == "Page.javascriptDialogOpening":  # dismiss, so the page does not hang
            self.next_id += 1
            self.ws.send(json.dumps({"id": self.next_id, "method": "Page.handleJavaScriptDialog", "params": {"accept": False}}))

    def wait_for(self, method: str, timeout: float = 30) -> dict | None:
        for e in self.events:
            if e["method"] == method:
                return e
        deadline = time.monotonic() + timeout
        self.ws.settimeout(0.5)
        try:
            while time.monotonic() < deadline:
                try:
                    msg = json.loads(self.ws.recv())
                except (socket.timeout, TimeoutError):
                    continue
                if "method" in msg:
                    self._on_event(msg)
                    if msg["method"] == method:
                        return msg
        finally:
            self.ws.settimeout(30)
        return None

    def drain(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        self.wait_for("__never__", timeout=seconds)

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluate failed: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")


@contextmanager
def devtools(timeout: float = 30):
    """Start headless Chromium with remote debugging on a free port; yield a :class:`DevTools` on a blank page."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed")
    udd = tempfile.mkdtemp(prefix="ca-chromium-")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={udd}", "--remote-debugging-port=0",
                             "--window-size=1280,1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ws = None
    try:
        port_file = Path(udd) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools server")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        page = None
        while page is None and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:  # local DevTools only
                targets = json.loads(r.read())
            page = next((t for t in targets if t.get("type") == "page"), None)
            if page is None:
                time.sleep(0.05)
        if page is None:
            raise RuntimeError("no page target in chromium")
        ws = WebSocket(page["webSocketDebuggerUrl"], timeout=timeout)
        yield DevTools(ws)
    finally:
        if ws is not None:
            ws.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(udd, ignore_errors=True)


def inspect_page(html: str | os.PathLike, probes: dict[str, str] | None = None, settle: float = 0.5, timeout: float = 60) -> dict:
    """Open ``html`` in headless Chromium and report what happened.

    Returns ``{"errors": [...], "requests": [...], "dialogs": [...], "probes": {name: value}, "dom": str}``:
    ``errors`` = uncaught exceptions, ``console.error``/``assert`` calls and
    error-level log entries; ``requests`` = URLs of every request that is
    not ``file:`` or ``data:``; ``dialogs`` = alert/confirm/prompt messages.
    ``probes`` are JavaScript expressions evaluated after load.
    """
    url = Path(html).resolve().as_uri()
    with devtools(timeout=timeout) as dt:
        for domain in ("Runtime", "Log", "Network", "Page"):
            dt.call(f"{domain}.enable")
        dt.events.clear()
        dt.call("Page.navigate", {"url": url})
        if dt.wait_for("Page.loadEventFired", timeout=timeout) is None:
            raise TimeoutError(f"{url} did not finish loading")
        dt.drain(settle)
        values = {name: dt.evaluate(expr) for name, expr in (probes or {}).items()}
        dt.drain(0.2)
        dom = dt.evaluate("document.documentElement.outerHTML")
        events = list(dt.events)
    errors, requests, dialogs, all_urls = [], [], [], []
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append("log: " + p["entry"].get("text", ""))
        elif m == "Network.requestWillBeSent":
            u = p.get("request", {}).get("url", "")
            all_urls.append(u)
            if not (u.startswith("file:") or u.startswith("data:")):
                requests.append(u)
        elif m == "Page.javascriptDialogOpening":
            dialogs.append(p.get("message", ""))
    return {"errors": errors, "requests": requests, "all_requests": all_urls, "dialogs": dialogs, "probes": values, "dom": dom}


def png_stats(png: str | os.PathLike) -> dict:
    """Distinct colours and the share of the most common colour of a PNG (is it blank?)."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 24) or []
        w, h = rgb.size
    top = max(c for c, _ in colours) if colours else w * h
    return {"size": (w, h), "n_colours": len(colours), "top_share": top / float(w * h)}
