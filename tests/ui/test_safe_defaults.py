"""Serving beyond loopback needs a login; a configured login is enforced."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from settings import Settings
from tests.ui.test_web import free_port
from ui.web import UnsafeBind, check_bind, is_loopback

ROOT = Path(__file__).resolve().parents[2]


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("my-host")


def test_non_loopback_bind_needs_user_and_password():
    check_bind(Settings())  # 127.0.0.1 by default
    with pytest.raises(UnsafeBind, match="ZHIKU_AUTH_USER and ZHIKU_AUTH_PASSWORD"):
        check_bind(Settings(host="0.0.0.0"))
    with pytest.raises(UnsafeBind):
        check_bind(Settings(host="0.0.0.0", auth_user="me"))
    check_bind(Settings(host="0.0.0.0", auth_user="me", auth_password="s3cret"))


def test_app_refuses_to_start_on_all_interfaces_without_login(tmp_path):
    env = {**os.environ, "ZHIKU_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run(
        [sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1
    assert "zhiku cannot start: refusing to listen on 0.0.0.0" in run.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything


@pytest.mark.slow
def test_configured_login_is_required(settings):
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    from services import build_services
    from ui.web import ZhikuUI, launch

    settings = settings.model_copy(update={"port": free_port(), "auth_user": "ana", "auth_password": "知库-pw"})
    services = build_services(settings)
    blocks = ZhikuUI(services).build()
    launch(blocks, settings, block=False)
    url = f"http://127.0.0.1:{settings.port}/"
    try:
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False).predict(api_name="/documents")
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("ana", "wrong"), verbose=False)
        table, _ = Client(url, auth=("ana", "知库-pw"), verbose=False).predict(api_name="/documents")
        assert table["data"] == []
    finally:
        blocks.close()
        services.close()
