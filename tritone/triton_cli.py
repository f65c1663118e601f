"""`tritone triton start|stop|status`: the real Triton server with the tts model, on loopback.

`start` runs in the foreground until Ctrl-C (or with `--detach` leaves the server running and
records it in `$TRITONE_HOME/triton/server.json` for `stop` and `status`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tritone.serving.server import DEFAULT_PORTS, DEFAULT_REPO, TritonServer, http_ok, read_state, state_file


def add_commands(sub: Any) -> None:
    triton = sub.add_parser(
        "triton",
        help="run the Triton inference server with the tts model (start, stop, status)",
        description="Run the real Triton server (from the nvidia-pytriton wheel) with the tts model on loopback.",
    )
    tsub = triton.add_subparsers(dest="triton_command", metavar="ACTION")

    start = tsub.add_parser("start", help="start the server and wait until the tts model is ready")
    start.add_argument(
        "--repo", type=Path, default=DEFAULT_REPO, help=f"model repository (default {DEFAULT_REPO})"
    )
    start.add_argument(
        "--target",
        choices=("cpu", "gpu"),
        default=None,
        help="runtime target (default: the repository's config)",
    )
    start.add_argument(
        "--base-model", type=Path, help="base model bundle directory (sets TRITONE_BASE_MODEL)"
    )
    start.add_argument("--mlflow-uri", help="adapter registry tracking URI (sets TRITONE_MLFLOW_URI)")
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    start.add_argument("--http-port", type=int, default=DEFAULT_PORTS[0], help="HTTP port (default 8000)")
    start.add_argument("--grpc-port", type=int, default=DEFAULT_PORTS[1], help="gRPC port (default 8001)")
    start.add_argument(
        "--metrics-port", type=int, default=DEFAULT_PORTS[2], help="metrics port (default 8002)"
    )
    start.add_argument("--log", type=Path, help="server log file (default under $TRITONE_HOME/triton/)")
    start.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for readiness (default 300)"
    )
    start.add_argument("--detach", action="store_true", help="leave the server running in the background")
    start.set_defaults(func=_start)

    stop = tsub.add_parser("stop", help="stop a server started with --detach")
    stop.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait before killing it (default 30)"
    )
    stop.set_defaults(func=_stop)

    status = tsub.add_parser("status", help="whether a detached server is running and ready")
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    status.set_defaults(func=_status)
    triton.set_defaults(func=lambda _args: triton.print_help() or 2)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if it is our own child (a zombie otherwise)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start(args: argparse.Namespace) -> int:
    state = read_state()
    if state and _alive(int(state["pid"])):
        raise ValueError(f"a server is already running (pid {state['pid']}); `tritone triton stop` first")
    env: dict[str, str] = {}
    if args.target:
        env["TRITONE_TARGET"] = args.target
    if args.base_model:
        env["TRITONE_BASE_MODEL"] = str(args.base_model.resolve())
    if args.mlflow_uri:
        env["TRITONE_MLFLOW_URI"] = args.mlflow_uri
    server = TritonServer(
        args.repo,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        env=env,
        log_file=args.log,
        startup_timeout_s=args.timeout,
    )
    print(f"starting tritonserver with {server.repo} (log: {server.log_file}) ...", flush=True)
    started = time.monotonic()
    server.start()
    print(
        f"ready in {time.monotonic() - started:.1f} s: gRPC {server.grpc_url}, HTTP {server.http_url}, "
        f"metrics {server.metrics_url}",
        flush=True,
    )
    if args.detach:
        state_file().parent.mkdir(parents=True, exist_ok=True)
        state_file().write_text(json.dumps(server.detach(), indent=2) + "\n")
        print(
            f"running in the background (pid {server.process.pid if server.process else '?'}); "
            "`tritone triton stop` stops it"
        )
        return 0
    print("Ctrl-C stops the server.", flush=True)
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        code = server.stop()
    if code not in (None, 0):
        print(f"tritonserver exited with code {code}; see {server.log_file}")
        return 1
    return 0


def _stop(args: argparse.Namespace) -> int:
    state = read_state()
    if not state:
        print("no detached server recorded")
        return 0
    pid = int(state["pid"])
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # its stubs share its group
            os.killpg(pid, signal.SIGKILL)
        print(f"stopped tritonserver (pid {pid})")
    else:
        print(f"tritonserver (pid {pid}) was not running")
    state_file().unlink(missing_ok=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    state = read_state()
    running = state is not None and _alive(int(state["pid"]))
    ready = (
        state is not None
        and running
        and http_ok(f"http://{state['host']}:{state['http_port']}/v2/health/ready")
    )
    info = {"running": running, "ready": ready, **(state or {})}
    if args.json:
        print(json.dumps(info, indent=2))
    elif not running:
        print("no tritonserver running (start one with `tritone triton start`)")
    else:
        print(
            f"tritonserver pid {info['pid']}: {'ready' if ready else 'NOT ready'}; gRPC {info['host']}:{info['grpc_port']}, "
            f"HTTP {info['host']}:{info['http_port']}, metrics {info['host']}:{info['metrics_port']}"
        )
    return 0 if ready else 1
