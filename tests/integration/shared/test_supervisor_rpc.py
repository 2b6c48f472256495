"""The supervisord client against a real supervisord on loopback TCP: the URL may name the
XML-RPC path or not (as supervisorctl's serverurl does); another scheme is refused."""

from __future__ import annotations

import sys

import pytest

from ops.embedded import free_port
from shared.supervisor_rpc import Supervisor, full_name
from tests.helpers import supervisord_with_collector


def test_an_http_url_with_or_without_its_rpc_path_reaches_supervisord() -> None:
    port = free_port()
    program = f"""command={sys.executable} -c "import time; time.sleep(600)"
startsecs=0

[inet_http_server]
port=127.0.0.1:{port}"""
    with supervisord_with_collector(program):
        for url in (
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{port}/",
            f"http://127.0.0.1:{port}/RPC2",
        ):
            client = Supervisor(url)
            assert client.state() == "RUNNING", url
            names = [full_name(info) for info in client.all_process_info()]
            assert names == ["bridge:collector"], url


def test_a_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported supervisord URL scheme 'https'"):
        Supervisor("https://127.0.0.1:9001")
