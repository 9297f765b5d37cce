"""How the long-running commands end: on Ctrl-C, on SIGTERM, and when whatever started them is killed.

`uv run train-local` and `uv run serve` are console scripts, so uv starts the Python that does the work and forwards
Ctrl-C and SIGTERM to it. SIGKILL of uv cannot be forwarded: `end_with_parent` asks the kernel to send SIGTERM when
the parent dies (Linux's PR_SET_PDEATHSIG), and `interrupt_on_sigterm` makes SIGTERM take Ctrl-C's path, so the
program's own cleanup runs either way. Python drops an exception raised inside a finaliser (a progress bar's
`__del__` or a weakref callback, say), so a KeyboardInterrupt can vanish: long loops call `raise_if_stopping` at
their safe points, and the dropped one is not reported as a traceback. A stop while a command is still starting
(importing torch takes seconds) ends it in one line: `exit_on_interrupt`.
"""

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_stopping = False  # set by the first Ctrl-C or SIGTERM that `interrupt_on_sigterm`'s handler receives


def end_with_parent(signum: int = signal.SIGTERM) -> None:
    """`signum` to this process when its parent ends (Linux; elsewhere nothing). Kept across exec, not fork."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum) != 0:
        return  # best effort: the signals that can be forwarded still are
    if os.getppid() != parent:  # the parent ended before the request took hold
        os.kill(os.getpid(), signum)


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does, in this process; later signals are ignored so that the
    cleanup runs to the end. Processes forked from this one get the default behaviour back when a signal arrives.
    (As a container's PID 1, Python would otherwise ignore SIGTERM: `docker stop` would wait, then SIGKILL.)"""
    main_pid = os.getpid()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:  # a forked child inherited this handler: behave as if it had none
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        global _stopping  # noqa: PLW0603 - the one fact a signal handler can hand to the code it interrupted
        _stopping = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    sys.unraisablehook = _quiet_about_dropped_stops


def _quiet_about_dropped_stops(unraisable: "sys.UnraisableHookArgs") -> None:  # quoted: the type exists in stubs only
    """Stay silent about the stop a finaliser swallowed (`raise_if_stopping` raises it again); report the rest."""
    if _stopping and isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


@contextlib.contextmanager
def exit_on_interrupt(when: str) -> Iterator[None]:
    """A stop inside the block ends the program with `error: interrupted <when>` and exit code 130, no traceback.

    Once a stop was asked for, any error from the block counts as the stop: an import that Ctrl-C cut short can leave a
    module half-initialised, and the library that tried it then raises an error of its own (seen: numpy's lazy
    submodules recursing, then transformers' ModuleNotFoundError for PreTrainedModel) instead of KeyboardInterrupt."""
    try:
        yield
    except (KeyboardInterrupt, Exception) as error:
        if not (isinstance(error, KeyboardInterrupt) or _stopping):
            raise
        print(f"\nerror: interrupted {when}", file=sys.stderr)  # on a line of its own: ^C holds the cursor
        raise SystemExit(130) from None


@contextlib.contextmanager
def children_leave_stops_to_this_process() -> Iterator[None]:
    """Processes started inside the block ignore Ctrl-C (SIGINT) and SIGTERM for life: an ignored signal stays ignored
    across exec, and Python then installs no handler of its own. For workers this process stops itself, in order (it
    kills them; see end_with_parent for when it dies first): a terminal sends Ctrl-C to the whole process group, and a
    worker still importing torch would answer it with a traceback; a service manager that sends SIGTERM to every
    process at once (systemd's default KillMode, supervisord's stopasgroup) would end a worker before the requests it
    holds are answered. Call it from the main thread. A stop sent to this process inside the block is held (Linux
    queues a blocked signal even while it is ignored) and raised as the block ends."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _sigterm_from_parent_only() -> None:
    """From now on SIGTERM reaches this process only when its parent sends it or is gone (end_with_parent); one from
    anyone else is ignored, since the parent stops its children in order (children_leave_stops_to_this_process says
    why). SIGTERM must be blocked in every thread already, as it is in a child just forked (forks_follow_this_process):
    a thread waits for it, reads who sent it, and lets the parent's through to this process (to its handler, or to the
    default: the end)."""
    parent = os.getppid()
    threading.Thread(target=_pass_on_parents_sigterm, args=(parent,), name="sigterm-from-parent", daemon=True).start()


def _pass_on_parents_sigterm(parent: int) -> None:
    while True:
        sender = signal.sigwaitinfo({signal.SIGTERM}).si_pid
        if sender in (parent, os.getpid()) or os.getppid() != parent:
            # This thread alone lets it through: raised here, the signal is handled (or ends the process) at once.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            signal.raise_signal(signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def forks_follow_this_process() -> None:
    """Processes forked from this one from now on (LitServe's HTTP servers and its manager) end when it ends, never see
    Ctrl-C and take SIGTERM from it alone: this process stops them, in order. A terminal sends Ctrl-C to the whole
    process group, and uvicorn takes a second Ctrl-C (people press it again when a stop takes a second) as leave to drop
    the requests in flight; an HTTP server that outlived a `kill -9` of this process would keep the port. Spawned
    processes run no fork hooks: `children_leave_stops_to_this_process` and `end_with_parent` cover those."""
    os.register_at_fork(after_in_child=_follow_parent)


def _follow_parent() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # a blocked SIGINT stays pending: never delivered
    end_with_parent()
    _sigterm_from_parent_only()


def hold_stops() -> None:
    """Keep Ctrl-C and SIGTERM pending from now on, across exec, until `release_stops`: the program exec'd next starts
    an interpreter and imports its modules before it can answer a stop in one line (a blocked signal waits; an
    ignored one would be lost)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release_stops() -> None:
    """Let Ctrl-C and SIGTERM through again; one that arrived while they were held is raised here."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def stopping() -> bool:
    """Whether a stop was asked for (Ctrl-C or SIGTERM, through `interrupt_on_sigterm`'s handler)."""
    return _stopping


def raise_if_stopping() -> None:
    """Raise KeyboardInterrupt (again) once a stop was asked for, in case the first one was dropped."""
    if _stopping:
        raise KeyboardInterrupt
