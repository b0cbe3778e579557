"""Test agent: prints the length and sha256 of the prompt in the file its first
argument names (a command profile's ``{prompt_file}``)."""

import hashlib
import sys
from pathlib import Path


def main():
    prompt = Path(sys.argv[1]).read_text(encoding="utf-8")
    print(f"prompt {len(prompt)} chars sha256 {hashlib.sha256(prompt.encode()).hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
