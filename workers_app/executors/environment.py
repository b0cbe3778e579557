"""The environment an agent process gets: an allowlist, never the worker's own.

A worker holds the platform's secrets in its environment (``DATABASE_URL``,
``REDIS_URL``, ``SECRET_KEY``, a remote worker's token, provider keys). An
agent is untrusted code steered by untrusted text, so it starts from nothing
and gets only:

- a few variables passed through from the worker when set: where programs
  are (``PATH``), language, terminal and time zone, certificate bundles and
  proxies its own tools need to reach the network (:data:`PASSED_THROUGH`);
- a ``HOME`` of its own (``context.home``), so agent CLIs keep their state
  per task and never read the worker user's dotfiles;
- exactly what its profile declares: ``env`` (literal values) and
  ``secrets`` (names whose values are read from the worker's environment,
  or from the file that ``<NAME>_FILE`` names, at the start of each run:
  never stored in the database or logged);
- what the platform hands every agent (``context.env``: its per-run token,
  the API address, ``agentvine-ask`` on PATH), which a profile cannot
  override.

Secret values are masked in the agent's output (:class:`SecretMask`) before
anything stores or publishes it.
"""

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from workers_app.executors.base import ExecutorConfigError

PASSED_THROUGH = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TERM",
        "COLORTERM",
        "NO_COLOR",
        "TZ",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "SHELL",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)
PASSED_THROUGH_PREFIXES = ("LC_",)

# A profile may not name the platform's own credentials as its secrets: that
# would hand the agent the database, the broker or a worker's identity.
PLATFORM_SECRETS = frozenset({"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"})
PLATFORM_PREFIX = "AGENTVINE_"
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Shorter values are not masked: replacing every "1" in the output protects nothing.
MIN_MASKED_CHARS = 4
MASK = "[secret {name}]"

ERR_SECRETS_NOT_A_LIST = "executor profile's secrets must be a list of variable names"
ERR_SECRET_NAME = "executor profile names an invalid secret: {name!r}"
ERR_SECRET_PLATFORM = "executor profile may not name the platform's own secret {name}"
ERR_SECRET_MISSING = "secret {name} named by the executor profile is not set on this worker (set {name} or {name}_FILE)"
ERR_SECRET_FILE = "cannot read secret {name} from the file {name}_FILE names: {reason}"
ERR_ENV_NOT_A_DICT = "executor profile's env must be an object of names to values"


def profile_secret_names(profile):
    names = profile.get("secrets") or []
    if not isinstance(names, list | tuple):
        raise ExecutorConfigError(ERR_SECRETS_NOT_A_LIST)
    for name in names:
        if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
            raise ExecutorConfigError(ERR_SECRET_NAME.format(name=name))
        if name in PLATFORM_SECRETS or name.startswith(PLATFORM_PREFIX):
            raise ExecutorConfigError(ERR_SECRET_PLATFORM.format(name=name))
    return list(names)


def secret_read(name, environ=None):
    """The value of secret ``name``: ``$NAME``, else the contents of ``$NAME_FILE``."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if value:
        return value
    path = environ.get(f"{name}_FILE")
    if not path:
        raise ExecutorConfigError(ERR_SECRET_MISSING.format(name=name))
    try:
        value = Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExecutorConfigError(ERR_SECRET_FILE.format(name=name, reason=exc.strerror or "unreadable")) from None
    if not value:
        raise ExecutorConfigError(ERR_SECRET_MISSING.format(name=name))
    return value


def profile_secrets(profile, environ=None):
    """``{name: value}`` of every secret the profile names; fails at once on a missing one."""
    return {name: secret_read(name, environ) for name in profile_secret_names(profile)}


class SecretMask:
    """Replaces each secret's exact value with ``[secret NAME]``.

    Longest values first, so a secret containing another is masked whole.
    ``overlap`` is how many characters of text cut at an arbitrary point must
    be held back until the next piece arrives, so no value is split unmasked.
    """

    def __init__(self, secrets=None):
        pairs = [(value, MASK.format(name=name)) for name, value in (secrets or {}).items()]
        self._pairs = sorted(
            ((value, label) for value, label in pairs if len(value) >= MIN_MASKED_CHARS), key=lambda p: -len(p[0])
        )
        self.overlap = max((len(value) for value, _ in self._pairs), default=1) - 1

    def __bool__(self):
        return bool(self._pairs)

    def __call__(self, text):
        for value, label in self._pairs:
            if value in text:
                text = text.replace(value, label)
        return text


def ask_report_path(context):
    return Path(context.home) / ".agentvine" / f"ask-failed-{context.work_order_id}"


def ask_failure(context):
    """The reason the agent's ask client gave up reaching the API, or ''."""
    if context.home is None:
        return ""
    try:
        return ask_report_path(context).read_text().strip().splitlines()[0]
    except (OSError, IndexError):
        return ""


@dataclass
class AgentEnvironment:
    variables: dict
    mask: SecretMask = field(default_factory=SecretMask)


def agent_environment(context, environ=None):
    """The whole environment of the agent process for ``context``, and the mask of its secrets."""
    environ = os.environ if environ is None else environ
    variables = {
        name: value
        for name, value in environ.items()
        if name in PASSED_THROUGH or name.startswith(PASSED_THROUGH_PREFIXES)
    }
    variables.setdefault("PATH", os.defpath)
    if context.home is not None:
        home = Path(context.home)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        variables["HOME"] = str(home)
    declared = context.profile.get("env") or {}
    if not isinstance(declared, dict):
        raise ExecutorConfigError(ERR_ENV_NOT_A_DICT)
    variables.update({str(name): str(value) for name, value in declared.items()})
    secrets = profile_secrets(context.profile, environ)
    variables.update(secrets)
    variables.update(context.env)
    variables["PYTHONUNBUFFERED"] = "1"
    # Marks every process of this run (executors/process.py kills them all
    # at its end, whatever session or process group they moved to).
    variables["AGENTVINE_RUN_MARKER"] = uuid.uuid4().hex
    if context.home is not None:
        # Where the ask client reports that it gave up reaching the API: the
        # runner fails the run with its reason (ask_failure).
        report = ask_report_path(context)
        report.unlink(missing_ok=True)
        variables["AGENTVINE_ASK_REPORT"] = str(report)
    return AgentEnvironment(variables=variables, mask=SecretMask(secrets))
