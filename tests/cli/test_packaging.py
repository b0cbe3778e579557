"""The client installs on a laptop without the server's stack."""

import subprocess
import sys

from tests.conftest import ROOT


def test_the_client_never_imports_django():
    probe = (
        "import sys, agentvine_cli.cli, agentvine_cli.__main__; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'rest_framework', 'celery', 'channels'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
