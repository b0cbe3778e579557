"""Test agent: reports whether the host's PostgreSQL port is reachable, then
asks a human through agentvine-ask and prints the answer."""

import socket
import subprocess
import sys


def main():
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=3).close()
        print("network: reachable", flush=True)
    except OSError:
        print("network: unreachable", flush=True)
    asked = subprocess.run(["agentvine-ask", "Which colour?"], capture_output=True, text=True)
    if asked.returncode != 0:
        print(f"could not ask: {asked.stderr.strip()}", flush=True)
        return 1
    print(f"answer: {asked.stdout.strip()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
