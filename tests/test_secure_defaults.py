"""Secure defaults: DEBUG off, no development SECRET_KEY in production,
`check --deploy` clean with production settings, custom error pages,
security headers and a Content-Security-Policy the console's templates keep."""

import re
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

from agentvine.headers import API_DOCS_CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY
from tests.conftest import ROOT

# What production sets (README, "Configuration"); nothing else.
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "agentvine.example",
    "AGENTVINE_HTTPS": "true",
    "DATABASE_URL": "postgres://agentvine@db.example:5432/agentvine",
}


def _django(args, env):
    """``manage.py`` in a fresh process with only ``env`` and the basics."""
    base = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "agentvine.settings"}
    base["AGENTVINE_VAR_DIR"] = str(settings.VAR_DIR)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_production_settings():
    result = _django(["check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV)

    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


def test_debug_is_off_unless_set_and_production_refuses_the_development_key():
    unset = {k: v for k, v in PRODUCTION_ENV.items() if k != "DEBUG"}
    debug = _django(["shell", "-c", "from django.conf import settings; print(settings.DEBUG)"], unset)
    no_key = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    refused = _django(["check"], no_key)
    local = _django(["check"], {**no_key, "DEBUG": "true"})

    assert debug.stdout.strip().splitlines()[-1] == "False"
    assert refused.returncode != 0
    assert settings.ERR_DEVELOPMENT_SECRET_KEY in refused.stderr
    assert local.returncode == 0, local.stderr


@pytest.mark.django_db
def test_unknown_page_is_the_consoles_404_not_a_debug_page(client, operator):
    client.force_login(operator)

    response = client.get("/no/such/page/")

    page = response.content.decode()
    assert response.status_code == 404
    assert 'data-testid="error-page"' in page and "Page not found" in page
    assert "URLconf" not in page and "agentvine.urls" not in page


@pytest.mark.django_db
def test_pages_carry_the_security_headers_and_the_api_docs_their_own_policy(client, operator):
    client.force_login(operator)

    page = client.get("/")
    docs = client.get("/api/v1/docs/")
    login = client.get("/accounts/login/")

    for response in (page, login):
        assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert "camera=()" in response["Permissions-Policy"]
    assert docs.status_code == 200
    assert docs["Content-Security-Policy"] == API_DOCS_CONTENT_SECURITY_POLICY
    # Its script is served from here (the split view), not inline.
    assert not re.search(r"<script>(?!\s*</script>)", docs.content.decode())


def test_no_template_has_inline_script_or_style():
    offenders = []
    for template in sorted((ROOT / "templates").rglob("*.html")):
        text = template.read_text()
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) or re.search(r"\son[a-z]+=", text):
            offenders.append(f"{template.name}: inline script")
        if re.search(r"\sstyle=", text) or "<style" in text:
            offenders.append(f"{template.name}: inline style")
    assert offenders == []
