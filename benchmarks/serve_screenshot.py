"""Check the serving demo page in a real headless browser and save a screenshot for the docs.

    python benchmarks/serve_screenshot.py --run runs/cascade-bench/ml-100k-cascade --user 42 \
        --out docs/images/serve_demo.png

Starts `recstack serve` on a free loopback port, waits for /readyz, loads `/?user_id=USER` in headless
chromium (Debian's `chromium` package: `apt-get install chromium`), checks through chromium's own DOM dump
that the page shows the user's history and a page of items with channel tags, and writes the screenshot.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RECSTACK = Path(sys.executable).with_name("recstack")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, seconds: float = 120.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server at {url} not ready after {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--user", default="42")
    parser.add_argument("--out", default="docs/images/serve_demo.png")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("headless chromium not found: apt-get install chromium")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(RECSTACK), "serve", args.run, "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_ready(url)
        page = f"{url}/?user_id={args.user}"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
        html = dom.stdout
        checks = {
            "history table": "history" in html.lower(),
            "page with channel tags": 'class="tag"' in html,
            "per-stage latency": "ms" in html,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if dom.returncode != 0 or failed:
            raise SystemExit(f"demo page check failed: {failed or dom.stderr[-500:]}")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run(
            [browser, *flags, "--window-size=1280,1400", f"--screenshot={out.resolve()}", page],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if shot.returncode != 0 or not out.is_file():
            raise SystemExit(f"screenshot failed: {shot.stderr[-500:]}")
        print(f"demo page checked ({', '.join(checks)}); screenshot {out} ({out.stat().st_size} bytes)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
