"""`fabric up` as a user runs it, twice and in the wrong order: a second stack never breaks the first,
a restart keeps what the user set, and a missing config file is an error, not the default."""

from __future__ import annotations

import json
from pathlib import Path

from .util import fabric_in, fabric_up, free_port


async def test_a_second_stack_refuses_and_the_first_keeps_serving(tmp_path: Path) -> None:
    home, other = tmp_path / "home", tmp_path / "other"
    home.mkdir()
    other.mkdir()
    port = free_port()
    async with fabric_up(home, port):
        # Same FABRIC_HOME, other ports: once it killed the first stack's Temporal server.
        code, out, err = await fabric_in(home, "up", "--port", str(free_port()), "--ui-port", str(free_port()))
        assert code == 1 and "another `fabric up`" in err and f"Temporal 127.0.0.1:{port}" in err, out + err
        assert "Traceback" not in err
        # Same port, another FABRIC_HOME: once it attached to the first stack's server with an empty store.
        code, out, err = await fabric_in(other, "up", "--port", str(port), "--ui-port", str(free_port()))
        assert code == 1 and f"port {port} on 127.0.0.1 is in use" in err and "Traceback" not in err, out + err
        # The first one still answers, with its pools.
        code, out, err = await fabric_in(home, "pool", "list", "--json", port=port)
        assert code == 0 and {p["name"] for p in json.loads(out)} >= {"onprem-dc1", "cloud-use1"}, err


async def test_a_restart_keeps_what_the_user_set(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    pool = tmp_path / "pool.yaml"
    pool.write_text("name: added-later\nlocation: on-prem\nbackend: simulated\nregion: dc2\ngpus: {A100: 2}\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("placement:\n  default: on-prem\n  burst: {when: 'on_prem_utilization > 0.5', target: cloud}\n")
    async with fabric_up(home, port) as printed:
        assert "kept what the store holds" not in printed  # the first start applies the default
        assert (await fabric_in(home, "pool", "add", "-f", str(pool), port=port))[0] == 0
        code, out, err = await fabric_in(home, "policy", "set", "-f", str(policy), "--json", port=port)
        assert code == 0, err
        version = json.loads(out)["version"]

    async with fabric_up(home, port) as printed:
        assert f"kept what the store holds: policy version {version}" in printed, printed
        code, out, _ = await fabric_in(home, "policy", "show", "--json", port=port)
        shown = json.loads(out)
        assert shown["version"] == version and shown["policy"]["placement"]["burst"]["when"] == \
            "on_prem_utilization > 0.5"
        code, out, _ = await fabric_in(home, "pool", "list", "--json", port=port)
        assert "added-later" in {p["name"] for p in json.loads(out)}

    async with fabric_up(home, port, "--apply-config") as printed:
        assert "applied built-in default again (--apply-config)" in printed, printed
        code, out, _ = await fabric_in(home, "policy", "show", "--json", port=port)
        assert json.loads(out)["policy"]["placement"]["burst"]["when"] == "on_prem_utilization > 0.85"


async def test_a_config_file_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    code, _, err = await fabric_in(tmp_path, "up", "--port", str(free_port()), "-c", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml: no such file" in err and "Traceback" not in err


async def test_a_mistake_in_fabric_yaml_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "fabric.yaml"
    config.write_text("pools:\n  - {name: p, location: moon, backend: simulated}\n")
    code, out, err = await fabric_in(tmp_path, "up", "--port", str(free_port()), "-c", str(config))
    assert code == 2 and "location" in err and "Traceback" not in out + err, out + err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
