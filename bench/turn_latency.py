#!/usr/bin/env python
"""Turn latency of the Tandem chat over WebSockets, against a no-work echo floor.

Not a test: it prints figures. Two ways to run it, from the repo root:

    # against a server that is already running (its model and echo route are up to you)
    .venv/bin/python bench/turn_latency.py --url http://127.0.0.1:8000

    # start everything: an in-process fake OpenAI server, migrate + load_demo, daphne
    .venv/bin/python bench/turn_latency.py --start --sessions 20 --turns 3

Per turn it measures, from the moment ``message.send`` is written:

* ttft_ms      first ``assistant.delta`` (or the final message when nothing streamed);
* turn_ms      the final ``message.new`` (role "assistant");
* overhead_ms  turn_ms minus the model time the server reports (``message.model_ms``).

echo_rtt_ms is the round trip of a text frame through ``/ws/echo/`` on the same server with
the same concurrency: the floor that daphne + Channels cost before Tandem does anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

# Questions the demo knowledge base answers (convo/demo/articles), so turns reach the model
# instead of ending in a hand-off.
QUESTIONS = (
    "How long does standard delivery take?",
    "How much does standard delivery within Germany cost?",
    "How many days do I have to return an item?",
    "How long does a refund take to reach my account?",
    "Which payment methods do you accept?",
    "How should I wash my waterproof jacket?",
    "How long is the warranty on your gear?",
    "How can I track my order?",
)

FINAL_ROLES = {"assistant", "system"}


# --- results -------------------------------------------------------------------------------


@dataclass
class TurnResult:
    ok: bool
    ttft_ms: float | None = None
    turn_ms: float | None = None
    model_ms: float | None = None
    model_ms_estimated: bool = False
    error: str = ""


@dataclass
class Results:
    turns: list[TurnResult] = field(default_factory=list)
    echo_rtt_ms: list[float] = field(default_factory=list)
    echo_errors: list[str] = field(default_factory=list)

    @property
    def ok_turns(self) -> list[TurnResult]:
        return [t for t in self.turns if t.ok]

    @property
    def turn_errors(self) -> list[str]:
        return [t.error for t in self.turns if not t.ok]


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (inclusive method: stays within the observed range)."""
    if not values:
        return (float("nan"),) * 3  # type: ignore[return-value]
    if len(values) == 1:
        return (values[0],) * 3  # type: ignore[return-value]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


# --- the Tandem protocol -------------------------------------------------------------------


def ws_base(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


def ws_connect(url: str, path: str, timeout: float) -> connect:
    target = path if path.startswith(("ws://", "wss://")) else ws_base(url) + path
    # proxy=None: websockets 15 honours *_PROXY variables by default, wrong for loopback.
    return connect(
        target,
        origin=url,  # type: ignore[arg-type]  # Origin is a NewType of str
        open_timeout=timeout,
        proxy=None,
        max_size=2**22,
    )


async def create_conversation(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.post(f"{url}/api/v1/conversations/", json={}, headers={"Origin": url})
    if response.status_code not in (200, 201):
        raise RuntimeError(
            f"create conversation: HTTP {response.status_code} {response.text[:200]}"
        )
    data = response.json()
    for key in ("id", "ws_url"):
        if key not in data:
            raise RuntimeError(f"create conversation: no {key!r} in {data!r}")
    return data


def estimated_model_ms(args: argparse.Namespace, text: str) -> float:
    """What the fake server spends on one answer: latency plus one delay per chunk gap.

    The fake streams a role chunk, one chunk per word and a finish chunk.
    """
    words = len(text.split(" ")) if text else 1
    return 1000.0 * (args.model_latency + args.token_delay * (words + 1))


async def run_turn(
    ws: ClientConnection,
    args: argparse.Namespace,
    question: str,
    timeout: float,
    seen: set[str],
) -> TurnResult:
    """Send one message and read events until its final message.new (or the deadline)."""
    loop = asyncio.get_running_loop()
    client_id = str(uuid.uuid4())
    payload = json.dumps({"type": "message.send", "client_id": client_id, "text": question})
    sent = time.perf_counter()
    await ws.send(payload)
    deadline = loop.time() + timeout
    first_token: float | None = None
    error: str = ""
    error_deadline: float | None = None
    while True:
        limit = deadline if error_deadline is None else min(deadline, error_deadline)
        remaining = limit - loop.time()
        if remaining <= 0:
            if error:
                return TurnResult(ok=False, error=error)
            return TurnResult(ok=False, error=f"timeout after {timeout:.0f}s")
        try:
            raw = await asyncio.wait_for(ws.recv(), remaining)
        except TimeoutError:
            continue
        now = time.perf_counter()
        try:
            event = json.loads(raw)
        except (TypeError, ValueError):
            continue
        kind = event.get("type")
        if kind == "assistant.delta":
            if event.get("turn_id") in seen:
                continue  # a straggler from an earlier turn
            if first_token is None:
                first_token = now
        elif kind == "error":
            # Keep listening briefly: the server may still close the turn with a system message.
            error = f"error event {event.get('code')}: {event.get('message')}"
            error_deadline = loop.time() + 2.0
        elif kind == "message.new":
            message = event.get("message") or {}
            role = message.get("role")
            turn_id = message.get("turn_id")
            if role not in FINAL_ROLES or (turn_id and turn_id in seen):
                continue
            if turn_id:
                seen.add(str(turn_id))
            if role == "system":
                detail = (message.get("text") or "")[:80]
                return TurnResult(ok=False, error=error or f"system message: {detail}")
            turn_ms = (now - sent) * 1000.0
            ttft_ms = ((first_token or now) - sent) * 1000.0
            model_ms = message.get("model_ms")
            estimated = model_ms is None
            if estimated:
                model_ms = estimated_model_ms(args, message.get("text") or "")
            return TurnResult(
                ok=True,
                ttft_ms=ttft_ms,
                turn_ms=turn_ms,
                model_ms=float(model_ms),
                model_ms_estimated=estimated,
            )


async def chat_session(
    index: int,
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    start: asyncio.Barrier,
    turns: int,
    timeout: float,
) -> list[TurnResult]:
    """One visitor: create a conversation, connect, wait for the others, run turns."""
    try:
        conversation = await create_conversation(http, args.url)
        ws = await ws_connect(args.url, conversation["ws_url"], timeout)
    except Exception as exc:  # noqa: BLE001 - every failure is a data point
        await start.wait()
        reason = f"setup: {type(exc).__name__}: {exc}"
        return [TurnResult(ok=False, error=reason) for _ in range(turns)]
    results: list[TurnResult] = []
    seen: set[str] = set()
    try:
        await start.wait()
        for turn in range(turns):
            question = QUESTIONS[(index + turn) % len(QUESTIONS)]
            try:
                result = await run_turn(ws, args, question, timeout, seen)
            except Exception as exc:  # noqa: BLE001
                result = TurnResult(ok=False, error=f"{type(exc).__name__}: {exc}")
            results.append(result)
            if not result.ok and result.error.startswith(("timeout", "Connection")):
                break  # the socket is unusable or its events would bleed into the next turn
            if args.think:
                await asyncio.sleep(args.think)
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
    while len(results) < turns:
        results.append(TurnResult(ok=False, error="not run: an earlier turn of the session failed"))
    return results


async def echo_session(
    index: int,
    args: argparse.Namespace,
    start: asyncio.Barrier,
    messages: int,
    timeout: float,
) -> tuple[list[float], list[str]]:
    rtts: list[float] = []
    errors: list[str] = []
    try:
        ws = await ws_connect(args.url, "/ws/echo/", timeout)
    except Exception as exc:  # noqa: BLE001
        await start.wait()
        return rtts, [f"echo connect: {type(exc).__name__}: {exc}"] * messages
    try:
        await start.wait()
        for seq in range(messages):
            # About the size of a message.send frame.
            text = json.dumps({"type": "echo", "session": index, "seq": seq, "text": QUESTIONS[0]})
            sent = time.perf_counter()
            try:
                await ws.send(text)
                reply = await asyncio.wait_for(ws.recv(), timeout)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"echo: {type(exc).__name__}: {exc}")
                break
            if reply != text:
                errors.append(f"echo: unexpected reply {str(reply)[:80]!r}")
                continue
            rtts.append((time.perf_counter() - sent) * 1000.0)
            if args.think:
                await asyncio.sleep(args.think)
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
    errors.extend(["echo: not run"] * (messages - len(rtts) - len(errors)))
    return rtts, errors


async def run_bench(args: argparse.Namespace) -> Results:
    results = Results()
    limits = httpx.Limits(max_connections=args.sessions + 4)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits, trust_env=False) as http:
        if args.warmup:
            # One turn first: loads models and caches, and checks the protocol before the crowd.
            print(f"warm-up: {args.warmup} turn(s) ...", flush=True)
            alone = asyncio.Barrier(1)
            warm = await chat_session(0, args, http, alone, args.warmup, max(args.timeout, 120))
            for result in warm:
                if not result.ok:
                    print(f"  warm-up turn failed: {result.error}", flush=True)
                    results.turns.append(result)

        if not args.no_echo:
            print(
                f"echo floor: {args.sessions} sessions x {args.turns} messages ...",
                flush=True,
            )
            # Every session connects, then all start sending together.
            start = asyncio.Barrier(args.sessions)
            echoes = [
                echo_session(i, args, start, args.turns, args.timeout) for i in range(args.sessions)
            ]
            for rtts, errors in await asyncio.gather(*echoes):
                results.echo_rtt_ms.extend(rtts)
                results.echo_errors.extend(errors)

        print(f"turns: {args.sessions} sessions x {args.turns} turns ...", flush=True)
        start = asyncio.Barrier(args.sessions)
        sessions = [
            chat_session(i, args, http, start, args.turns, args.timeout)
            for i in range(args.sessions)
        ]
        for session_results in await asyncio.gather(*sessions):
            results.turns.extend(session_results)
    return results


# --- reporting ----------------------------------------------------------------------------


def report(args: argparse.Namespace, results: Results) -> int:
    ok = results.ok_turns
    turn_errors = results.turn_errors
    estimated = sum(1 for t in ok if t.model_ms_estimated)
    rows = [
        ("ttft_ms", [t.ttft_ms for t in ok if t.ttft_ms is not None], len(turn_errors)),
        (
            "overhead_ms",
            [
                t.turn_ms - t.model_ms
                for t in ok
                if t.turn_ms is not None and t.model_ms is not None
            ],
            len(turn_errors),
        ),
        ("turn_ms", [t.turn_ms for t in ok if t.turn_ms is not None], len(turn_errors)),
        (
            "model_ms",
            [t.model_ms for t in ok if t.model_ms is not None],
            len(turn_errors),
        ),
    ]
    if not args.no_echo:
        rows.append(("echo_rtt_ms", results.echo_rtt_ms, len(results.echo_errors)))

    print()
    print(f"{'metric':<13}{'n':>6}{'p50':>10}{'p95':>10}{'p99':>10}{'errors':>8}")
    for name, values, errors in rows:
        p50, p95, p99 = percentiles(values)
        print(f"{name:<13}{len(values):>6}{p50:>10.1f}{p95:>10.1f}{p99:>10.1f}{errors:>8}")
    print()
    if estimated:
        print(
            f"note: the server reported no model_ms for {estimated} of {len(ok)} turns; "
            f"their model time is estimated from the fake's settings (latency "
            f"{args.model_latency}s + {args.token_delay}s per chunk), so overhead is approximate."
        )
    if turn_errors or results.echo_errors:
        print("errors (most common first):")
        counts: dict[str, int] = {}
        for message in turn_errors + results.echo_errors:
            counts[message] = counts.get(message, 0) + 1
        for message, count in sorted(counts.items(), key=lambda kv: -kv[1])[:10]:
            print(f"  {count:>4} x {message}")

    _, ttft_p95, _ = percentiles(rows[0][1])
    _, overhead_p95, _ = percentiles(rows[1][1])
    _, echo_p95, _ = percentiles(results.echo_rtt_ms)
    errors_total = len(turn_errors) + len(results.echo_errors)
    summary = (
        f"sessions={args.sessions} turns={len(ok)} ttft_p95_ms={ttft_p95:.1f} "
        f"overhead_p95_ms={overhead_p95:.1f} echo_p95_ms={echo_p95:.1f} errors={errors_total}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "summary": summary,
                    "sessions": args.sessions,
                    "turns_ok": len(ok),
                    "errors": errors_total,
                    "model_ms_estimated": estimated,
                    "metrics": {
                        name: dict(zip(("p50", "p95", "p99"), percentiles(values), strict=True))
                        | {"n": len(values)}
                        for name, values, _ in rows
                    },
                },
                indent=2,
            )
        )
    print(summary, flush=True)
    return 1 if errors_total else 0


# --- starting the stack (--start) ----------------------------------------------------------


def venv_bin(name: str) -> str:
    candidate = REPO_ROOT / ".venv" / "bin" / name
    if candidate.exists():
        return str(candidate)
    if name == "python":
        return sys.executable
    found = shutil.which(name)
    if found:
        return found
    raise SystemExit(f"cannot find {name!r} in .venv/bin or on PATH")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before /healthz")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    raise RuntimeError(f"/healthz did not return 200 within {timeout:.0f}s (last: {last})")


def stop_process(proc: subprocess.Popen[bytes] | None, name: str) -> None:
    """Stop one process this script started, by its own PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        print(f"{name} (pid {proc.pid}) ignored SIGTERM; killing it", flush=True)
        proc.kill()
        proc.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def want_worker(args: argparse.Namespace, env: dict[str, str]) -> bool:
    if args.worker != "auto":
        return args.worker == "yes"
    # With Redis the turns run on Celery's "turns" queue, which needs a worker; without
    # Redis Celery runs eagerly inside daphne.
    eager = env.get("CELERY_TASK_ALWAYS_EAGER", "").lower() in (
        "1",
        "true",
        "yes",
        "on",
    )
    return bool(env.get("REDIS_URL")) and not eager


class Stack:
    """The processes of --start: the in-process fake model, daphne, maybe a Celery worker."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.fake: FakeOpenAI | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self._logs: list[Any] = []
        self.log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="tandem-bench-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> str:
        args = self.args
        self.fake = FakeOpenAI(latency_s=args.model_latency, token_delay_s=args.token_delay)
        self.fake.start()
        print(
            f"fake model: {self.fake.base_url} (latency {args.model_latency}s, "
            f"token delay {args.token_delay}s)",
            flush=True,
        )

        env = dict(os.environ)
        env.update(
            LLM_BASE_URL=self.fake.base_url,
            LLM_API_KEY="x",
            LLM_MODEL="fake-model",
            TANDEM_BENCH_ECHO="1",
            PYTHONUNBUFFERED="1",
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        # A bench sends more messages per minute than a visitor may; the caller can override.
        env.setdefault("CHAT_RATE_LIMIT_PER_MINUTE", "100000")

        python = venv_bin("python")
        for command in (["migrate", "--noinput"], ["load_demo"]):
            print(f"$ manage.py {' '.join(command)}", flush=True)
            log = self.log_dir / f"{command[0]}.log"
            with log.open("wb") as out:
                done = subprocess.run(  # noqa: S603 - fixed argv
                    [python, "manage.py", *command],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            if done.returncode:
                raise RuntimeError(
                    f"manage.py {command[0]} failed ({done.returncode}):\n{tail(log)}"
                )

        port = args.port or free_port()
        url = f"http://127.0.0.1:{port}"
        server_log = self.log_dir / "daphne.log"
        print(
            f"$ daphne -b 127.0.0.1 -p {port} config.asgi:application  (log: {server_log})",
            flush=True,
        )
        self.server = subprocess.Popen(  # noqa: S603 - fixed argv
            [
                venv_bin("daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "config.asgi:application",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log(server_log),
            stderr=subprocess.STDOUT,
        )
        if want_worker(args, env):
            worker_log = self.log_dir / "celery.log"
            concurrency = str(args.worker_concurrency or args.sessions)
            print(
                f"$ celery worker -P threads -c {concurrency}  (log: {worker_log})",
                flush=True,
            )
            self.worker = subprocess.Popen(  # noqa: S603 - fixed argv
                [
                    venv_bin("celery"),
                    "-A",
                    "config",
                    "worker",
                    "-l",
                    "warning",
                    "-Q",
                    args.worker_queues,
                    "-P",
                    "threads",
                    "-c",
                    concurrency,
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=self._log(worker_log),
                stderr=subprocess.STDOUT,
            )
        elif env.get("REDIS_URL"):
            print("note: REDIS_URL is set but no Celery worker was started (--worker no)")
        try:
            wait_healthy(url, self.server, args.start_timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- daphne log ---\n{tail(server_log)}") from exc
        print(f"server: {url} is healthy", flush=True)
        return url

    def _log(self, path: Path) -> Any:
        handle = path.open("wb")
        self._logs.append(handle)
        return handle

    def stop(self) -> None:
        stop_process(self.worker, "celery worker")
        stop_process(self.server, "daphne")
        if self.fake is not None:
            self.fake.stop()
        for handle in self._logs:
            handle.close()


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure Tandem chat turn latency over WebSockets against an echo floor.",
    )
    target = parser.add_argument_group("target")
    target.add_argument(
        "--url",
        default=None,
        help="a running Tandem server (default http://127.0.0.1:8000)",
    )
    target.add_argument(
        "--start",
        action="store_true",
        help="start the fake model, migrate, load_demo and daphne here",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--sessions", type=int, default=20, help="concurrent conversations")
    load.add_argument("--turns", type=int, default=3, help="turns per conversation")
    load.add_argument("--timeout", type=float, default=30.0, help="seconds per turn")
    load.add_argument("--think", type=float, default=0.0, help="seconds between turns")
    load.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="turns on one conversation before measuring (not counted)",
    )
    load.add_argument("--no-echo", action="store_true", help="skip the /ws/echo/ floor")
    model = parser.add_argument_group("fake model (--start; also the fallback model time)")
    model.add_argument(
        "--model-latency",
        type=float,
        default=0.3,
        help="seconds before the fake's first byte",
    )
    model.add_argument(
        "--token-delay",
        type=float,
        default=0.005,
        help="seconds between the fake's chunks",
    )
    start = parser.add_argument_group("--start options")
    start.add_argument("--port", type=int, default=0, help="daphne port (default: a free one)")
    start.add_argument(
        "--start-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for /healthz",
    )
    start.add_argument(
        "--worker",
        choices=("auto", "yes", "no"),
        default="auto",
        help="start a Celery worker (auto: when REDIS_URL is set and not eager)",
    )
    start.add_argument("--worker-queues", default="turns,default", help="queues for that worker")
    start.add_argument(
        "--worker-concurrency",
        type=int,
        default=0,
        help="worker threads (default: --sessions)",
    )
    start.add_argument("--log-dir", default=None, help="where server logs go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.start and args.url:
        parser.error("use either --url or --start")
    if args.sessions < 1 or args.turns < 1:
        parser.error("--sessions and --turns must be at least 1")
    if not args.url and not args.start:
        args.url = "http://127.0.0.1:8000"
    if args.url:
        args.url = args.url.rstrip("/")
    return args


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack: Stack | None = None
    # A plain SIGTERM would skip the ``finally`` and orphan the processes started here.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.start:
            stack = Stack(args)
            args.url = stack.start()
        results = asyncio.run(run_bench(args))
    except RuntimeError as exc:
        print(f"bench failed: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("bench interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        if stack is not None:
            stack.stop()
    return report(args, results)


if __name__ == "__main__":
    sys.exit(main())
