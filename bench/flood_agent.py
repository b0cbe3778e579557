"""Benchmark agent: prints numbered lines as fast as it can.

    flood_agent.py "flood <lines> <width>"

The argument is the task prompt; its first line is the task title. Each line
starts with its 12-digit number so the benchmark can check order and loss.
"""

import sys


def main():
    words = sys.argv[1].split("\n")[0].split()
    lines, width = int(words[1]), int(words[2])
    pad = "x" * max(width - 13, 0)
    write = sys.stdout.write
    for number in range(lines):
        write(f"{number:012d} {pad}\n")


if __name__ == "__main__":
    main()
