"""Test agent: prints numbered ticks for the number of seconds in its prompt.

The prompt's first line may be "ticker <seconds>" (the task title); anything
else means 1 second. SIGINT stops it cooperatively with exit code 130, unless
the title says "ticker <seconds> stubborn": then only a hard kill stops it.
"""

import signal
import sys
import time


def main():
    words = sys.argv[1].split() if len(sys.argv) > 1 else []
    seconds = float(words[1]) if len(words) > 1 and words[0] == "ticker" else 1.0

    def stop(signum, frame):
        print("ticker: interrupted", flush=True)
        sys.exit(130)

    stubborn = len(words) > 2 and words[0] == "ticker" and words[2] == "stubborn"
    signal.signal(signal.SIGINT, signal.SIG_IGN if stubborn else stop)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        print(f"tick {n}", flush=True)
        time.sleep(0.1)
    print("ticker: done", flush=True)


if __name__ == "__main__":
    main()
