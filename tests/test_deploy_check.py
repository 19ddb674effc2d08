"""Production settings pass ``check --deploy`` and refuse to start half-configured."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def production_env(**overrides: str | None) -> dict[str, str]:
    """The test process's environment (same DATABASE_URL or embedded PostgreSQL) with production
    settings; an override of None removes the variable."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(48),  # 64 characters
        "ALLOWED_HOSTS": "tandem.example",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "AUDIT_CHECKPOINT_KEY": secrets.token_urlsafe(32),  # without it: governance.W001
    }
    for key in ("DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "CSRF_TRUSTED_ORIGINS"):
        env.pop(key, None)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def manage(*args: str, **overrides: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=production_env(**overrides),
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_production_settings_pass_the_deploy_check():
    assert len(production_env()["SECRET_KEY"]) == 64
    result = manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_can_fail():
    """With HSTS switched off the same check reports security.W004 and exits non-zero."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", SECURE_HSTS_SECONDS="0")
    assert result.returncode != 0
    assert "security.W004" in result.stderr


@pytest.mark.parametrize(("overrides", "message"), [
    ({"SECRET_KEY": None}, "SECRET_KEY must be set"),
    ({"SECRET_KEY": ""}, "SECRET_KEY must be set"),
    ({"SECRET_KEY": "too-short-for-production"}, "SECRET_KEY must be set"),
    ({"REDIS_URL": None}, "REDIS_URL is required in production"),
])
def test_production_refuses_to_start_half_configured(overrides, message):
    result = manage("check", **overrides)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_never_falls_back_to_eager_tasks_or_debug():
    code = ("from django.conf import settings as s; "
            "print(s.DEBUG, s.CELERY_TASK_ALWAYS_EAGER, s.SESSION_COOKIE_SECURE, s.CHANNEL_LAYERS['default']['BACKEND'])")
    result = manage("shell", "-c", code, DEBUG="true", CELERY_TASK_ALWAYS_EAGER="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["False", "False", "True", "channels_redis.pubsub.RedisPubSubChannelLayer"]
