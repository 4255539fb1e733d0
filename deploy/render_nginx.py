"""Render deploy/nginx.conf.template: nginx's cache in front of N explorer API processes.

Usage: python deploy/render_nginx.py --listen 80 --state-dir /var/cache/backprop-explorer \
           --api 10.0.0.2:8000 --api 10.0.0.3:8000 [--runs 10.0.0.2:8000] > /etc/nginx/nginx.conf
"""

from __future__ import annotations

import argparse
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
STATE_DIRS = ("cache", "client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp")


def render(
    listen: str,
    state_dir: Path,
    api: list[str],
    runs: list[str] | None = None,
    worker_processes: str = "auto",
    daemon: bool = True,
    lock_timeout: str = "100ms",
) -> str:
    """The config text; `runs` defaults to the first API process (the one whose SQLite file holds the runs)."""
    if not api:
        raise ValueError("at least one API process (host:port)")
    servers = lambda addresses: "\n".join(f"        server {a};" for a in addresses)  # noqa: E731
    values = {
        "listen": listen,
        "state_dir": str(state_dir),
        "api_servers": servers(api),
        "runs_servers": servers(runs or api[:1]),
        "worker_processes": worker_processes,
        "daemon": "on" if daemon else "off",
        "lock_timeout": lock_timeout,
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    assert "{{" not in text, "a placeholder the renderer does not know"
    return text


def prepare(state_dir: Path) -> None:
    """Create the directories the config names (nginx creates the cache's levels, not its parents)."""
    # started as root, nginx's workers run as nobody: they must reach the state directory (a tempdir is 0700)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    for name in STATE_DIRS:
        (state_dir / name).mkdir(parents=True, exist_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="80", help="nginx's listen: a port or address:port (default 80)")
    parser.add_argument("--state-dir", type=Path, required=True, help="pid, logs, temporary files and the cache")
    parser.add_argument("--api", action="append", required=True, help="an API process, host:port (repeat)")
    parser.add_argument("--runs", action="append", help="the process(es) holding the runs (default: the first --api)")
    parser.add_argument("--worker-processes", default="auto", help="nginx workers (default auto: one per core)")
    parser.add_argument("--foreground", action="store_true", help="daemon off: systemd's Type=simple, a container")
    parser.add_argument("--lock-timeout", default="100ms", help="how long a cold URL's other askers wait")
    args = parser.parse_args()
    prepare(args.state_dir)
    config = render(
        args.listen, args.state_dir, args.api, args.runs, args.worker_processes, not args.foreground, args.lock_timeout
    )
    print(config, end="")


if __name__ == "__main__":
    main()
