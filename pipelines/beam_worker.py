"""The local runner's worker processes: forked ready-made, and gone without teardown.

``mailpulse load`` on several local cores runs Beam's FnApiRunner with worker processes
(``pipelines.load.local_runner``), which start ``python -m pipelines.beam_worker`` in
place of ``python -m apache_beam.runners.worker.sdk_worker_main``. Two costs of Beam's
own command are avoided, both measured on a 2M-event load:

- **Start.** Each worker imported Beam and this package again: 1.2-1.4 s before its
  first chunk, while the driver waited. :class:`Zygote` is forked from the driver once
  it has imported everything (a copy with every module loaded, before Beam starts a
  thread); the worker command only hands its environment and standard streams to it
  over a Unix socket (``--zygote PATH``), and the zygote forks the worker, which runs
  Beam's harness at once. The command waits for the worker and exits with its status.
  Without a zygote (the driver had threads, or the socket is gone) the command runs the
  harness itself, as Beam's does.
- **End.** The runner stops its workers one after the other and waits for each process
  to exit; the interpreter's teardown (freeing Beam's objects one by one) took 0.8-1.0 s
  of that per worker. Once the harness has returned (its logs flushed to the runner,
  every staged file written and closed inside its bundle), a worker flushes its
  streams and leaves with ``os._exit``, keeping the harness's status: 0, or 1 after an
  error (its traceback printed first, as Python would).

If the driver dies, the zygote sees its pipe close and exits; a worker whose command is
killed (the runner does so to a worker that hangs) sees its socket close and exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback

#: Largest environment a worker command sends (Beam's pipeline options are a few KB).
_MAX_MESSAGE = 1 << 20


def exit_now(code: int) -> None:
    """Leave the process with ``code`` after flushing its logs and standard streams,
    without the interpreter's teardown (also ``mailpulse load``'s end, cli.entry)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _harness() -> int:
    """Beam's SDK harness (``sdk_worker_main.main``) until the runner closes it; its exit
    status."""
    from apache_beam.runners.worker import sdk_worker_main

    try:
        sdk_worker_main.main(sys.argv)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: BLE001 - reported as Python would, then the exit status 1
        traceback.print_exc()
        return 1
    return 0


class Zygote:
    """A fork of the driver, made before the pipeline runs, that forks its workers.

    ``path`` is known from the start, for the worker command; :meth:`start` forks (just
    before the pipeline runs) only when the driver runs no thread besides its main one
    (a fork copies only the calling thread; native library threads, such as Arrow's
    allocator or OpenBLAS, handle a fork themselves) and on Linux (on macOS some system
    libraries do not survive a fork), else it returns False and each
    worker command, finding no zygote, starts Beam's harness itself. :meth:`close`
    ends it.
    """

    def __init__(self) -> None:
        import tempfile
        import uuid

        # named now (the worker command carries it); made by start()
        self._dir = os.path.join(tempfile.gettempdir(), f"mailpulse-workers-{uuid.uuid4().hex}")
        self.path = os.path.join(self._dir, "zygote")
        self.pid: int | None = None
        self._pipe: int | None = None

    def start(self) -> bool:
        if (
            threading.active_count() != 1
            or not sys.platform.startswith("linux")  # macOS libraries may not survive a fork
            or not hasattr(socket, "send_fds")
        ):
            return False
        # what every worker imports, so the fork has it loaded
        import apache_beam.runners.worker.sdk_worker_main  # noqa: F401

        from . import load_transforms  # noqa: F401

        server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            os.mkdir(self._dir, 0o700)
            server.bind(self.path)  # (a TMPDIR too long for a socket's name fails here)
            server.listen(64)
        except OSError as exc:
            logging.getLogger(__name__).debug("no zygote for the workers: %s", exc)
            server.close()
            return False
        read_end, self._pipe = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing buffered is written twice
        pid = os.fork()
        if pid == 0:  # the zygote
            import shutil

            code = 0
            try:
                os.close(self._pipe)
                _serve(server, read_end)
            except BaseException:  # noqa: BLE001 - a zygote never returns into the driver
                traceback.print_exc()
                code = 1
            shutil.rmtree(self._dir, ignore_errors=True)  # also after a kill -9 of the driver
            os._exit(code)
        server.close()
        os.close(read_end)
        self.pid = pid
        return True

    def close(self) -> None:
        import shutil

        if self._pipe is not None:
            os.close(self._pipe)  # the zygote sees the pipe close and exits
            self._pipe = None
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None
        shutil.rmtree(self._dir, ignore_errors=True)


def _serve(server: socket.socket, driver: int) -> None:
    """The zygote's loop: a worker per connection, until the driver's pipe closes."""
    import select

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group: the driver handles it, and its pipe
    # closing ends the zygote
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        ready, _, _ = select.select([server, driver], [], [])
        if driver in ready:
            return
        conn, _ = server.accept()
        middle = os.fork()
        if middle == 0:
            # The worker is forked once more and this process leaves at once: the
            # worker is adopted by init, so the zygote never has a child left to reap.
            server.close()
            os.close(driver)
            if os.fork() == 0:
                exit_now(_forked_worker(conn))
            os._exit(0)
        conn.close()
        os.waitpid(middle, 0)


def _forked_worker(conn: socket.socket) -> int:
    """A worker forked by the zygote: the command's environment and streams, then the
    harness; its status goes back to the command."""
    code = 1
    try:
        message, fds, _flags, _addr = socket.recv_fds(conn, _MAX_MESSAGE, 3)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(json.loads(message))
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a new process
        sys.argv = [sys.executable, "-m", __name__]  # not the driver's flags
        # (with the driver's log handlers, on the command's stderr: -v shows it)
        logging.getLogger(__name__).debug("a worker forked from the zygote (pid %s)", os.getpid())
        root = logging.getLogger()
        for handler in list(root.handlers):  # the driver's, not a fresh worker's
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        threading.Thread(target=_leave_when_closed, args=(conn,), daemon=True).start()
        code = _harness()
    except BaseException:  # noqa: BLE001 - said on the command's stderr, status 1
        traceback.print_exc()
    try:
        conn.send(str(code).encode())
    except OSError:
        pass
    return code


def _leave_when_closed(conn: socket.socket) -> None:
    """The worker's command was killed: the worker goes too."""
    try:
        while conn.recv(16):
            pass
    except OSError:
        pass
    exit_now(1)


def _through_zygote(path: str) -> int | None:
    """Hand this command's environment and streams to the zygote; the worker's status,
    or None when no zygote answers (the command then runs the harness itself)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(path)
        socket.send_fds(conn, [json.dumps(dict(os.environ)).encode()], [0, 1, 2])
    except OSError:
        conn.close()
        return None
    answer = conn.recv(16)
    return int(answer) if answer.strip().isdigit() else 1


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--zygote":
        code = _through_zygote(argv[1])
        if code is not None:
            exit_now(code)
    exit_now(_harness())


if __name__ == "__main__":
    main()
