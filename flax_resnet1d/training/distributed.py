"""Training across processes with ``jax.distributed``: start-up, agreement, and losing a process.

Every process runs the same ``flax-resnet1d train`` (or ``training.loop.fit``) with the same arguments;
JAX's multi-controller runtime joins their devices into one ``jax.devices()`` (CPU collectives
over gloo, NCCL on GPUs). This module adds what the runtime leaves to the program:

- ``initialize``: checks the arguments and that the coordinator is reachable first, because a
  failed ``jax.distributed.initialize`` aborts the process (SIGABRT, a C++ stack) instead of raising.
- ``check_same_setup``: every process publishes a sha256 of its config and of its data through
  the coordinator's key-value store; any difference stops all of them with one error.
- ``on_primary``: file-system changes of the run directory (replacing it, quarantining a bad
  checkpoint) are made once, by process 0, after every process has reached that point; the
  others wait for the outcome and raise the same error if it failed.
- ``local_rows``: the rows of a global batch that this process's devices hold.
- a heartbeat: a daemon thread bumps this process's counter in the key-value store every
  ``heartbeat_timeout / 5`` s (at most 2 s) and watches the others'. A counter that stops for ``heartbeat_timeout``
  (a killed, frozen or disconnected host), a process that reports a failure, or a lost
  coordinator ends this process with one line naming the process, instead of hanging in a
  collective. JAX's own heartbeat, which aborts the process, is set to twice that plus 10 s
  so that this one, which exits cleanly, fires first.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import DistributedError, UsageError

KEY_PREFIX = "flax_resnet1d"
HEARTBEATS_PER_TIMEOUT = 5
MAX_HEARTBEAT_INTERVAL = 2.0  # seconds: how soon a peer's reported failure is seen
EXIT_LOST_PROCESS = 1  # a peer died or failed mid-run: not a usage error of this process
DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_HEARTBEAT_TIMEOUT = 60.0  # generous: a compile holding the GIL must not read as a dead host
# JAX has no public API for its distributed runtime's key-value store and barriers: the client
# comes from jax._src, known to work with this JAX (the one the tests run with).
CLIENT_TESTED_JAX = "0.10.2"
CLIENT_METHODS = ("key_value_set", "blocking_key_value_get", "key_value_dir_get", "wait_at_barrier")

_watchdog: _Watchdog | None = None
_sequence = 0  # distinguishes the key-value keys of successive agreements within one job


def _client():
    """The distributed runtime's client (None before ``initialize``), read from JAX's private API:
    ``DistributedError`` naming the JAX version if that API has changed."""
    import jax

    try:
        from jax._src.distributed import global_state
        client = global_state.client
    except (ImportError, AttributeError):
        missing = "jax._src.distributed.global_state.client"
    else:
        missing = next((f"the distributed client's {method}()" for method in CLIENT_METHODS
                        if client is not None and not hasattr(client, method)), None)
        if missing is None:
            return client
    raise DistributedError(f"JAX {jax.__version__} lacks {missing}, which training uses to coordinate processes "
                           f"(known to work with JAX {CLIENT_TESTED_JAX})")


def is_multiprocess() -> bool:
    return _client() is not None and _process_count() > 1


def _process_count() -> int:
    import jax

    return jax.process_count()


def _process_index() -> int:
    import jax

    return jax.process_index()


def _next_key(name: str) -> str:
    global _sequence
    _sequence += 1
    return f"{KEY_PREFIX}/{name}/{_sequence}"


# -- start-up ---------------------------------------------------------------------------------

def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--coordinator {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _check_port_free(host: str, port: int) -> None:
    """Process 0 binds the coordinator's port (on every interface, as JAX does)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            raise DistributedError(f"process 0 cannot serve the coordinator on port {port}: {e.strerror}") from None


def _wait_for_coordinator(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(f"coordinator {host}:{port} unreachable after {timeout:g} s "
                                       f"({e.strerror or e}); start process 0 there, or check --coordinator") from None
            time.sleep(0.2)


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
               heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT) -> None:
    """``jax.distributed.initialize`` with checked arguments, then start the heartbeat.

    With no coordinator, process count and id, the cluster's environment supplies them
    (SLURM, Open MPI, Kubernetes, Cloud TPU). Must run before any other JAX call.
    """
    import jax

    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and None in explicit:
        raise DistributedError("--coordinator, --num-processes and --process-id go together "
                               "(or use --distributed alone to read them from the cluster)")
    check_timeouts(connect_timeout, heartbeat_timeout)
    if coordinator is not None:
        if num_processes < 1:
            raise DistributedError(f"--num-processes must be at least 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise DistributedError(f"--process-id {process_id} is out of range for --num-processes {num_processes} "
                                   f"(0..{num_processes - 1})")
        host, port = parse_address(coordinator)
        start = time.monotonic()
        if process_id == 0:
            _check_port_free(host, port)
        else:
            _wait_for_coordinator(host, port, connect_timeout)
        connect_timeout = max(1.0, connect_timeout - (time.monotonic() - start))
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=max(1, round(connect_timeout)),
                                   heartbeat_timeout_seconds=round(2 * heartbeat_timeout + 10))
    except (ValueError, RuntimeError) as e:  # no cluster environment found, or JAX already in use
        hint = "" if coordinator else (" (--distributed found no cluster environment: SLURM, Open MPI, Kubernetes, "
                                       "Cloud TPU; give --coordinator, --num-processes and --process-id)")
        raise DistributedError(f"cannot start jax.distributed: {str(e).splitlines()[0]}{hint}") from None
    global _watchdog
    if _process_count() > 1:
        _watchdog = _Watchdog(heartbeat_timeout)
        _watchdog.start()
        atexit.register(_watchdog.stop)  # before JAX's own shutdown (atexit runs last-registered first)


MAX_TIMEOUT = 86400.0  # seconds: JAX takes whole seconds, and no start-up or silence lasts a day


def check_timeouts(connect_timeout: float, heartbeat_timeout: float) -> None:
    """DistributedError naming the option unless each timeout is a number in (0, MAX_TIMEOUT]
    seconds: nan and inf would wait forever (or overflow JAX's integer seconds)."""
    for option, value in (("--connect-timeout", connect_timeout), ("--heartbeat-timeout", heartbeat_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
            raise DistributedError(f"{option} must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {value!r}")


def initialize_from_args(given: dict) -> None:
    """``initialize`` if the command line asks for several processes; nothing otherwise. The
    timeouts are checked whenever given."""
    check_timeouts(given.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
                   given.get("heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT))
    if not ({"coordinator", "num_processes", "process_id", "distributed"} & given.keys()):
        return
    if given.get("distributed") and "coordinator" in given:
        raise DistributedError("--distributed reads the coordinator from the cluster; drop --coordinator "
                               "--num-processes --process-id, or --distributed")
    initialize(given.get("coordinator"), given.get("num_processes"), given.get("process_id"),
               connect_timeout=given.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
               heartbeat_timeout=given.get("heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT))


def launch(command: Callable[[Any], int]) -> Callable[[Any], int]:
    """Decorates a CLI command: start ``jax.distributed`` from its flags, and tell the other
    processes when this one fails (so they stop too) or find out whether a failed collective
    means a peer was lost."""

    @functools.wraps(command)
    def run(args) -> int:
        initialize_from_args(vars(args))
        try:
            return command(args)
        except BaseException as e:
            if _watchdog is not None:
                _watchdog.failed(e)
            raise

    return run


# -- agreement --------------------------------------------------------------------------------

def setup_digests(config_dict: dict) -> dict[str, str]:
    """sha256 of the config (file paths reduced to their names: mount points may differ
    between hosts; the data digest left out) and the sha256 of the data the config records
    (``data.digest``: shapes, dtypes and bytes of the loaded arrays)."""
    data = config_dict.get("data", {})
    portable = {**config_dict, "data": {k: os.path.basename(v) if k in ("source", "test") and v else v
                                        for k, v in data.items() if k != "digest"}}
    config_digest = hashlib.sha256(json.dumps(portable, sort_keys=True).encode()).hexdigest()
    return {"config": config_digest, "data": data.get("digest") or ""}


def check_same_setup(config_dict: dict, timeout: float = 600.0) -> None:
    """Every process has the same config and data, or every process raises ``DistributedError``."""
    if not is_multiprocess():
        return
    client, me, count = _client(), _process_index(), _process_count()
    key = _next_key("setup")
    client.key_value_set(f"{key}/{me}", json.dumps(setup_digests(config_dict)))
    digests = [json.loads(client.blocking_key_value_get(f"{key}/{p}", int(timeout * 1e3))) for p in range(count)]
    for what in ("data", "config"):  # data first: the recipe derives settings from it (the shifts)
        differ = [p for p in range(1, count) if digests[p][what] != digests[0][what]]
        if differ:
            noun = "arguments (config)" if what == "config" else "data"
            raise DistributedError(f"process{'es' if len(differ) > 1 else ''} {', '.join(map(str, differ))} of "
                                   f"{count} started with other {noun} than process 0 (sha256 "
                                   f"{digests[differ[0]][what][:12]} vs {digests[0][what][:12]}); start every "
                                   "process with the same arguments and data")


def on_primary(name: str, function: Callable, *args, timeout: float = 600.0):
    """``function(*args)`` on process 0 only, once every process has arrived here; the others
    wait for it and raise the same ``UsageError`` if it raised one. One process: just the call."""
    if not is_multiprocess():
        return function(*args)
    client, key = _client(), _next_key(name)
    client.wait_at_barrier(f"{key}/arrived", int(timeout * 1e3))
    if _process_index() == 0:
        try:
            result = function(*args)
        except UsageError as e:
            client.key_value_set(f"{key}/outcome", f"error:{e}")
            raise
        client.key_value_set(f"{key}/outcome", "ok")
        return result
    outcome = client.blocking_key_value_get(f"{key}/outcome", int(timeout * 1e3))
    if outcome.startswith("error:"):
        raise UsageError(outcome.removeprefix("error:"))
    return None


def local_rows(sharding, batch_size: int) -> slice:
    """The contiguous rows of a ``(batch_size, ...)`` array, sharded by ``sharding`` over its
    first axis, that this process's devices hold."""
    indices = sharding.addressable_devices_indices_map((batch_size,)).values()
    starts = sorted({index[0].indices(batch_size)[:2] for index in indices})
    rows = slice(starts[0][0], starts[-1][1])
    if sum(stop - start for start, stop in starts) != rows.stop - rows.start:
        raise DistributedError("this process's devices do not hold one contiguous block of the batch")
    return rows


# -- the heartbeat ------------------------------------------------------------------------------

def _stop(message: str, code: int = EXIT_LOST_PROCESS, *, shutdown: bool = False) -> None:
    """One line on stderr, then exit at once. With ``shutdown`` (the peers are alive) first
    meet them at the runtime's shutdown barrier; after a lost process that barrier would wait
    for it and then abort, so it is skipped."""
    print(f"flax-resnet1d: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    if shutdown:
        import jax

        jax.distributed.shutdown()
    os._exit(code)


class _Watchdog(threading.Thread):
    """Bumps this process's heartbeat counter and stops this process when another one is lost."""

    def __init__(self, timeout: float):
        super().__init__(name="flax_resnet1d-heartbeat", daemon=True)
        self.timeout, self.interval = timeout, min(timeout / HEARTBEATS_PER_TIMEOUT, MAX_HEARTBEAT_INTERVAL)
        self.me, self.count = _process_index(), _process_count()
        self.client = _client()  # here, so that a changed JAX API fails in the main thread
        self.own_failure, self.stopping = threading.Event(), threading.Event()

    def stop(self) -> None:
        """End the thread before the interpreter does: a daemon thread still inside the runtime's
        C++ client at exit is unwound there and aborts the process."""
        self.stopping.set()
        self.join(timeout=10.0)

    def failed(self, error: BaseException) -> None:
        """This process is failing with ``error``. A usage error (or Ctrl-C) is announced to the
        others at once, which then stop (when they hit the same error, they exit on their own). Any other
        error in a multi-process run is most often a collective that failed because a peer
        died: wait for the heartbeat to name it (it then ends this process)."""
        if not isinstance(error, (UsageError, KeyboardInterrupt)):
            time.sleep(self.timeout + 2 * self.interval)
        self.own_failure.set()
        try:
            self.client.key_value_set(f"{KEY_PREFIX}/failed/{self.me}",
                                      str(error).splitlines()[0][:300] if str(error) else type(error).__name__)
        except Exception:  # the coordinator is gone: the others learn it from their own heartbeats
            pass

    def run(self) -> None:
        client = self.client
        beats, last_seen, failed_peers = 0, {}, set()
        while not self.stopping.is_set():
            beats += 1
            try:
                client.key_value_set(f"{KEY_PREFIX}/heartbeat/{self.me}", str(beats), allow_overwrite=True)
                failures = dict(client.key_value_dir_get(f"{KEY_PREFIX}/failed/"))
                counters = dict(client.key_value_dir_get(f"{KEY_PREFIX}/heartbeat/"))
            except Exception as e:
                if self.own_failure.is_set() or self.stopping.is_set():
                    return
                _stop(f"lost the coordinator (process 0 of {self.count}): {str(e).splitlines()[0][:200]}")
            now = time.monotonic()
            # A peer's failure is acted on one beat after it is seen: the same error usually
            # reaches this process's main thread too, which then exits through its own path.
            for key, message in failures.items():
                peer = int(key.rsplit("/", 1)[1])
                if peer != self.me and peer in failed_peers and not self.own_failure.is_set():
                    _stop(f"process {peer} of {self.count} failed: {message}", 2, shutdown=True)
                failed_peers.add(peer)
            for peer in range(self.count):
                if peer == self.me:
                    continue
                counter = counters.get(f"{KEY_PREFIX}/heartbeat/{peer}")
                if peer not in last_seen or last_seen[peer][0] != counter:
                    last_seen[peer] = (counter, now)
                elif now - last_seen[peer][1] > self.timeout and not self.own_failure.is_set():
                    _stop(f"lost process {peer} of {self.count}: no heartbeat for {self.timeout:g} s "
                          "(killed, frozen or disconnected); restart every process with --resume RUN_DIR")
            self.stopping.wait(self.interval)
