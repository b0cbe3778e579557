"""Several daphne processes behind one port.

    python -m agentvine.web_processes --processes 4 --bind 0.0.0.0 --port 8000

One daphne is one core (its event loop and Django's threads share a GIL):
a fleet of remote workers needs more (``bench/fleet.py``). This parent
opens the listening socket and starts ``--processes`` daphnes that accept
on it (``daphne --fd``); the kernel hands each new connection to one of
them. SIGTERM and SIGINT are passed on (each daphne answers its waiting
requests, then stops: agentvine/asgi_shutdown.py); when one daphne dies
the others are stopped and the parent exits with its status, so a
supervisor (compose, systemd) restarts the whole set.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys

APPLICATION = "agentvine.asgi:application"


def web_processes_start(*, processes, bind, port, extra_args=(), env=None, stdout=None):
    """Bind ``bind:port`` and start ``processes`` daphnes on it; returns
    ``(the daphne processes, the port bound)`` (``port`` 0 picks a free one)."""
    listener = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(4096)
    listener.set_inheritable(True)
    command = [sys.executable, "-m", "daphne", "--fd", str(listener.fileno()), *extra_args, APPLICATION]
    started = [
        subprocess.Popen(
            command,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            pass_fds=[listener.fileno()],
            start_new_session=True,
        )
        for _ in range(processes)
    ]
    bound = listener.getsockname()[1]
    # The daphnes hold the socket now.
    listener.close()
    return started, bound


def main(argv=None):
    parser = argparse.ArgumentParser(description="several daphne processes behind one port")
    parser.add_argument("--processes", type=int, default=int(os.environ.get("WEB_PROCESSES", "1")))
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args, daphne_args = parser.parse_known_args(argv)
    started, port = web_processes_start(
        processes=args.processes, bind=args.bind, port=args.port, extra_args=daphne_args
    )
    print(f"{args.processes} daphne processes on {args.bind}:{port}", flush=True)

    asked = []

    def stop(signum, frame):
        if frame is not None:
            asked.append(signum)  # a supervisor's stop, not a daphne's death
        for process in started:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pid, status = os.wait()
    stop(signal.SIGTERM, None)
    for process in started:
        process.wait()
    code = os.waitstatus_to_exitcode(status) if pid else 0
    if asked and code in (-signal.SIGTERM, -signal.SIGINT):
        # A daphne still starting (no handler of its own yet) ends at the
        # stop signal passed on to it: the stop asked for, not a failure.
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
