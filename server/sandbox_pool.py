"""Learner code runs in pre-warmed sandbox processes with a memory limit and a timeout.

A sandbox process that runs past the timeout, or dies, is killed and replaced; the learner gets a 4xx reason.
The web process never runs learner code itself.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .core.limits import MEMORY_LIMIT, limit_memory

if TYPE_CHECKING:
    from .core.data import Dataset

DataHandOver = tuple[str, bytes, str]  # a dataset's path (its name), bytes and sha256, as the server validated them

TIMEOUT_S = 3.0  # an evaluation that takes longer is stopped (a lecture gradient takes milliseconds)
PASSES_KEPT = 16
CACHE_SHARE = 4  # a sandbox process's passes hold at most 1/4 of its memory limit; the rest is the learner's code's
CHECK_NICENESS = 10
# imported once, by the process the sandbox processes are forked from (multiprocessing's forkserver), instead of by
# each: torch (~1.4 s of CPU) and its compiler front end, which torch imports at the first shape error on the meta
# device (~1 s; every process has one in its warm-up, and learners make them)
PRELOADED = ["torch", "torch._dynamo"]


def sandbox_context() -> multiprocessing.context.BaseContext:
    """Where sandbox processes come from: forked from a server of its own that has PRELOADED imported. It is started
    with the first sandbox process, and again if it died; it ends when this process does."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOADED)
    return ctx


def failure_message(e: BaseException, memory_limit: int) -> str:
    """What a learner is told when grading failed with an error the sandbox did not turn into a reason."""
    text = str(e).strip()
    if is_memory_error(e):
        return f"the check needs more memory than a check may use ({memory_limit >> 20} MiB); try a smaller config"
    first = text.splitlines()[0][:300] if text else ""
    return f"the check failed: {type(e).__name__}" + (f": {first}" if first else "")


def is_memory_error(e: BaseException) -> bool:
    """Whether a failure is the memory limit's (the one failure after which a sandbox lets its passes go)."""
    text = str(e)
    return isinstance(e, MemoryError) or "can't allocate memory" in text or "Cannot allocate memory" in text


def escaped(value: Any) -> Any:
    """`value` with every string UTF-8 can carry: a lone surrogate (Python allows one, JSON's UTF-8 does not) is
    written as its escape, '\\ud800'. Lists, tuples and dicts are rebuilt; anything else is kept as it is."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {escaped(k): escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(escaped(v) for v in value)
    return value


def answer_json(to_json: Callable[[Any], bytes], answer: Any) -> bytes:
    """An answer's JSON bytes; one whose text holds a lone surrogate (a label the learner typed) is escaped first."""
    try:
        return to_json(answer)
    except (TypeError, UnicodeEncodeError):
        return to_json(escaped(answer))


def death_message(exitcode: int | None) -> str:
    """Why a sandbox process stopped, from its exit code, for the learner whose check it was running."""
    if exitcode is None:
        why = "stopped answering"
    elif exitcode == -signal.SIGKILL:
        why = "was killed (SIGKILL: the system does that when memory runs out)"
    elif exitcode < 0:
        why = f"crashed ({signal.Signals(-exitcode).name})"
    else:
        why = f"exited (code {exitcode})"
    return f"the evaluator {why} while checking this code; it has been restarted"


def quiet_start(start: Callable[[], None]) -> None:
    """Run `start` (a spawn, or a fork by the forkserver) with SIGINT and SIGTERM held back in this thread, so that
    the parent's own handlers run once the child exists. The child does not inherit the mask (the spawn, and the
    forkserver's start, reset it): until its first lines ignore SIGINT, a Ctrl-C to the process group can end it
    with Python's KeyboardInterrupt, which the parent survives."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _serve(conn: Connection, memory_limit: int) -> None:
    # the web process owns this process (it kills it when it stops): a Ctrl-C to the process group is not for it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        data: DataHandOver
        data, environment = conn.recv()  # over this pipe, not the start's arguments: see SandboxProcess
    except EOFError:  # the web process stopped before handing the data over
        return
    # the pool's environment as it is now (the network files it serves among it), not the forkserver's at its start
    os.environ.clear()
    os.environ.update(environment)

    import torch

    from .core.cache import PassCache
    from .core.config import ModelConfig
    from .core.data import dataset_from
    from .core.engine import run_backward
    from .core.serialize import graded_json
    from .learner.cells import grade_cell
    from .learner.challenge import grade, hints
    from .learner.sandbox import Refused
    from .net.packs import NETS

    torch.set_num_threads(1)
    dataset = dataset_from(*data)  # the words the server validated, not the file (it may have changed)

    def new_cache() -> PassCache:
        return PassCache(dataset, maxsize=PASSES_KEPT, max_bytes=memory_limit // CACHE_SHARE)

    passes = new_cache()
    # warm up (imports, first kernels, meta device) before the limit and the first learner: each pack's own answers
    for net in NETS.values():
        for warm in net.warmup:
            bp = run_backward(ModelConfig(net=net.name, **net.defaults), dataset, warm.mode)
            if warm.target:  # the step whose rules make that gradient
                step = next(k for k, op in enumerate(bp.schedule, 1) if any(r.target == warm.target for r in op.rules))
                grade(bp, step, warm.code)
            else:
                grade_cell(bp, warm.code)
    warmed_at = os.nice(0)
    # then below the web server: learners' code never slows down pages and the API. The warm-up (~3 s of CPU)
    # ran at the server's priority: niced on a busy machine it took over a minute, and the first check was
    # refused with "the evaluator did not start"
    os.nice(CHECK_NICENESS)
    try:
        limit_memory(memory_limit)
    except (OSError, ValueError):  # no /proc or no rlimit: the timeout still holds
        pass
    conn.send({"ready": True, "warmed_at_niceness": warmed_at})
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the web process is gone
            return
        try:
            if "train" in job:  # a training run's backward block, checked on the run's first batch as it will be
                conn.send(check_training_code(dataset, job["train"]))
                continue
            if "passes" in job:  # how many passes it keeps (what a failed check must not throw away)
                conn.send({"passes": len(passes)})
                continue
            bp = passes.get(job["config"], job["mode"])
            if job.get("hints"):
                conn.send({"hints": hints(bp, job["step"])})
            elif job.get("step") is None:  # a whole backward cell
                conn.send({"json": answer_json(graded_json, grade_cell(bp, job["code"]))})
            else:
                # serialized here, not in the web process: its event loop never spends time on a check's JSON
                conn.send({"json": answer_json(graded_json, grade(bp, job["step"], job["code"]))})
        except Refused as e:
            conn.send({"refused": escaped(str(e))})
        except Exception as e:  # any other failure: the learner hears what it was, and the process carries on
            conn.send({"refused": escaped(failure_message(e, memory_limit))})
            if is_memory_error(e):
                passes = new_cache()  # whatever grew is let go: the cache is the likeliest cause


def check_training_code(dataset: Dataset, fields: dict[str, Any]) -> dict[str, Any]:
    """What POST /api/runs is told of a run's backward block (backward=code): compiled as the run will compile it."""
    from .core.engine import init_params
    from .training.code_backward import CodeBackward
    from .training.config import TrainConfig

    config = TrainConfig(**fields)
    splits = dataset.splits(config.block_size)
    n = config.batch_size
    p, _ = init_params(config.model(), dataset.vocab_size)
    assert config.code is not None
    block = CodeBackward(
        p, n, config.code, splits.Xtr[:n], splits.Ytr[:n], net=config.model().pack
    )  # Refused with the reason, or it trains
    # the block's measured processor time on the check batch: a run's CPU bound starts from it where the
    # estimate of a step is lower (a slow block is refused before it is queued, not found out after hours)
    return {"ok": True, "step_cpu_s": block.check_s}


class SandboxProcess:
    """One pre-warmed process that grades learner code (_serve), talking over a pipe."""

    def __init__(self, data: DataHandOver, memory_limit: int) -> None:
        ctx = sandbox_context()
        self.conn, child = ctx.Pipe()
        # the words go over this pipe, not as the start's arguments: multiprocessing writes those into the child
        # while it still holds the pipe's other end itself, so a child that dies first (a Ctrl-C reaches both)
        # leaves that write blocked for good; here a dead child is a broken pipe
        self.proc = ctx.Process(target=_serve, args=(child, memory_limit), daemon=True)
        try:
            quiet_start(self.proc.start)
        except (EOFError, OSError):  # the forkserver ended while forking it (a SIGTERM to the process group ends
            pass  # both): as a process that died at once, its pipe is broken and the slot starts a fresh one
        child.close()
        self.ready = False
        self.started: dict[str, Any] = {}  # its ready message
        try:
            self.conn.send((data, dict(os.environ)))
        except OSError:  # it died at once: wait_ready says so, and the slot starts a fresh one
            pass

    def wait_ready(self, timeout: float) -> bool:
        try:
            if not self.ready and self.conn.poll(timeout):
                self.started = self.conn.recv()
                self.ready = bool(self.started.get("ready"))
        except (EOFError, OSError):  # it died while starting
            return False
        return self.ready

    def kill(self) -> None:
        if self.proc.pid is not None:  # it started
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


class SandboxPool:
    """N sandbox processes; a job waits for a free one. run() gives {"json": the graded answer} or {"refused": why}."""

    def __init__(
        self, dataset: Dataset, size: int = 2, timeout_s: float = TIMEOUT_S, memory_limit: int = MEMORY_LIMIT
    ) -> None:
        self.data: DataHandOver = (str(dataset.path), dataset.raw, dataset.sha256)
        self.timeout_s, self.memory_limit = timeout_s, memory_limit
        self.idle: queue.Queue[SandboxProcess | None] = queue.Queue()
        for _ in range(size):
            self.idle.put(SandboxProcess(self.data, memory_limit))
        self.respawns = 0
        self._lock = threading.Lock()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        sandbox = self.idle.get()  # a SandboxProcess, or None: a slot whose process is (re)started now
        healthy = False
        try:
            if sandbox is None:
                sandbox = SandboxProcess(self.data, self.memory_limit)
            if not sandbox.wait_ready(60):
                return {"refused": "the evaluator did not start; try again"}
            sandbox.conn.send(job)
            if not sandbox.conn.poll(self.timeout_s):
                return {"refused": f"the code ran longer than {self.timeout_s:g} s and was stopped"}
            answer = sandbox.conn.recv()
            healthy = True
            return answer
        except (EOFError, OSError):  # the process is gone: say how it went
            sandbox.proc.join(timeout=5)
            return {"refused": death_message(sandbox.proc.exitcode)}
        finally:
            # the slot always comes back: with its process, or empty (stuck, dead or never started) so that
            # the next job starts a fresh one
            if not healthy and sandbox is not None:
                sandbox.kill()
                with self._lock:
                    self.respawns += 1
            self.idle.put(sandbox if healthy else None)

    def close(self) -> None:
        while not self.idle.empty():
            sandbox = self.idle.get()
            if sandbox is not None:
                sandbox.kill()
