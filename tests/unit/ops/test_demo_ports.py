"""The demo's ports: the last run's when they are all still free, else new ones, never one
already chosen nor a port the usual services listen on."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import demo


def save(demo_dir: Path, ports: dict[str, int]) -> None:
    demo_dir.mkdir(parents=True, exist_ok=True)
    (demo_dir / "ports.json").write_text(json.dumps(ports))


def test_a_saved_port_now_in_use_means_new_ports(tmp_path: Path) -> None:
    saved = demo.choose_ports(tmp_path)
    save(tmp_path, saved)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", saved["redis_port"]))
        busy.listen()
        chosen = demo.choose_ports(tmp_path)
    assert saved["redis_port"] not in chosen.values()
    assert len(set(chosen.values())) == len(demo.PORT_NAMES)


@pytest.mark.parametrize(
    "broken",
    [
        {"pg_port": 1, "redis_port": 1, "gateway_port": 2, "gateway_control_port": 3},  # twice
        {"pg_port": 50001},  # some missing (a hand-edited or truncated file)
        {"pg_port": 70000, "redis_port": 4, "gateway_port": 2, "gateway_control_port": 3},
        ["not", "a", "mapping"],
    ],
)
def test_a_saved_file_that_cannot_be_reused_means_new_ports(tmp_path: Path, broken: object) -> None:
    (tmp_path / "ports.json").write_text(json.dumps(broken))
    chosen = demo.choose_ports(tmp_path)
    assert set(chosen) == set(demo.PORT_NAMES)
    assert len(set(chosen.values())) == len(demo.PORT_NAMES)
    assert not {1, 2, 3} & set(chosen.values())


def scripted(ports: list[int]) -> Iterator[int]:
    yield from ports


def test_a_port_taken_or_of_a_usual_service_is_passed_over() -> None:
    offers = scripted([5432, 40001, 6379, 4001, 4002, 40002])
    assert demo._free_port({40001}, pick=lambda: next(offers)) == 40002


def test_no_usable_port_after_a_hundred_offers_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no free loopback port"):
        demo._free_port(set(), pick=lambda: 5432)
