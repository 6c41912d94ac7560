"""Shared pieces of the hypothesis fuzz tests of the file readers (test_avatar, test_audio):
crash-safe isolation in a forked child, and random edits of real files."""
from __future__ import annotations

import os
import signal
import time
import traceback

from hypothesis import HealthCheck, settings, strategies as st

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FUZZ_MEMORY_MB = 2048        # address space a check may add before allocation fails (a memory bomb)


class Hang(AssertionError):
    """A check that did not finish within its time limit."""


class Crash(AssertionError):
    """A check whose process died of a signal (segfault, abort)."""


def isolated(fn, *args, limit_s: float) -> None:
    """Run fn(*args) in a forked child so a segfault, a hang in C code or a memory bomb fails the
    test instead of killing pytest. The child's exception comes back as AssertionError text."""
    import resource

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                                    # child: never returns
        code, msg = 0, b""
        try:
            os.close(r)
            vm_kb = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize:")).split()[1])
            cap = vm_kb * 1024 + FUZZ_MEMORY_MB * 2 ** 20
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            fn(*args)
        except BaseException:
            code, msg = 1, traceback.format_exc().encode()[-30000:]
        os.write(w, msg)
        os._exit(code)
    os.close(w)
    deadline = time.monotonic() + limit_s
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise Hang(f"{fn.__name__}{args!r} did not finish within {limit_s} s")
            time.sleep(0.002)
        text = os.read(r, 65536).decode(errors="replace")
    finally:
        os.close(r)
    if os.WIFSIGNALED(status):
        raise Crash(f"{fn.__name__}{args!r} killed the process with {signal.Signals(os.WTERMSIG(status)).name}")
    assert os.WEXITSTATUS(status) == 0, f"{fn.__name__}{args!r} failed in the child:\n{text}"


#: Edits to a file: (kind, position (taken modulo the length), byte, inserted bytes).
MUTATIONS = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]), st.integers(0, 1 << 20),
                               st.integers(1, 255), st.binary(min_size=1, max_size=256)), min_size=1, max_size=4)


def mutate(data: bytes, ops) -> bytes:
    """Apply MUTATIONS-style edits: xor one byte, cut the tail, insert bytes, or delete up to 256 bytes."""
    b = bytearray(data)
    for kind, where, value, blob in ops:
        at = where % (len(b) + 1)
        if kind == "flip" and b:
            b[at % len(b)] ^= value
        elif kind == "truncate":
            del b[at:]
        elif kind == "insert":
            b[at:at] = blob
        elif kind == "delete":
            del b[at:at + value]
    return bytes(b)
