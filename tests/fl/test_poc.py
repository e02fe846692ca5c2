"""A provisioned proof of concept: real FLARE server and sites on 127.0.0.1 over mutual TLS, one
round of the archive's job, then everything stopped (process trees killed if need be)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from carina.fl.job import JobSpec
from carina.fl.provision import Kits, project_file, provision, run_poc
from carina.fl.weights import load_global
from tests.fl.conftest import quick_archive
from tests.servers import free_port

pytestmark = pytest.mark.integration


def test_provisioned_kits_hold_mutual_tls_material(tmp_path: Path) -> None:
    project = project_file(
        tmp_path / "project.yml", name="hospital_net", sites=["site-1", "site-2"], port=free_port()
    )
    kits = Kits.find(provision(project, tmp_path / "kits"))
    assert set(kits.sites) == {"site-1", "site-2"}
    for kit in [kits.server, kits.admin, *kits.sites.values()]:
        assert (kit / "startup" / "rootCA.pem").is_file()
        assert list((kit / "startup").glob("*.key")), f"{kit.name} has its own private key"
    server = json.loads((kits.server / "startup" / "fed_server.json").read_text())
    assert "ssl_private_key" in json.dumps(server) or "server.key" in json.dumps(server)


def test_a_bad_project_file_is_named(tmp_path: Path) -> None:
    from carina.errors import ConfigError

    with pytest.raises(ConfigError, match="no such project file"):
        provision(tmp_path / "missing.yml", tmp_path / "kits")
    broken = tmp_path / "broken.yml"
    broken.write_text("api_version: 3\nname: x\nparticipants: []\n")
    with pytest.raises(ConfigError, match=r"broken\.yml: provisioning failed: FLARE says: \S"):
        provision(broken, tmp_path / "kits")


def test_poc_runs_one_round_over_mutual_tls(tmp_path: Path, data_dir: Path) -> None:
    sites = {"site-1": "spine_ct_vertebra", "site-2": "spine_mr_vertebra"}
    project = project_file(
        tmp_path / "project.yml", name="poc", sites=list(sites), port=free_port()
    )
    kits = provision(project, tmp_path / "kits")
    archive = quick_archive(tmp_path / "archive", iterations=4)
    before = {p.pid for p in psutil.process_iter()}
    lines: list[str] = []
    spec = JobSpec(archive=archive, sites=sites, rounds=1, threads=1)
    result = run_poc(spec, kits, data_dir=data_dir, timeout=600, progress=lines.append)
    assert "COMPLETED" in result.status
    assert any("mutual TLS" in line for line in lines)
    assert (archive / "models" / "model.pt").is_file()
    assert set(result.final) == set(sites)
    metrics = json.loads((archive / "eval" / "fl_metrics.json").read_text())
    assert len(metrics["rounds"]) == 1
    leftovers = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid not in before and "nvflare" in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [], "every FLARE process is gone"


def test_poc_aggregates_under_homomorphic_encryption(tmp_path: Path, data_dir: Path) -> None:
    from carina.fl.components import ENCRYPTED_KEY
    from carina.fl.provision import SERVER_CONTEXT, SITE_CONTEXT

    sites = {"site-1": "spine_ct_vertebra", "site-2": "spine_mr_vertebra"}
    project = project_file(
        tmp_path / "project.yml", name="he", sites=list(sites), port=free_port(), homomorphic=True
    )
    kits = Kits.find(provision(project, tmp_path / "kits"))
    assert (kits.server / "startup" / SERVER_CONTEXT).is_file()
    assert all((kit / "startup" / SITE_CONTEXT).is_file() for kit in kits.sites.values())
    archive = quick_archive(tmp_path / "archive", iterations=4)
    spec = JobSpec(archive=archive, sites=sites, rounds=2, threads=1, homomorphic=True)
    result = run_poc(spec, kits.server.parent, data_dir=data_dir, timeout=600)
    assert "COMPLETED" in result.status
    # The server only ever held the aggregate as ciphertexts: its saved model cannot be read
    # without a site's secret key.
    with np.load(result.workspace / "global_model.npz") as stored:
        assert ENCRYPTED_KEY in stored.files
        assert all(stored[name].dtype == np.uint8 for name in stored[ENCRYPTED_KEY])
    with pytest.raises(ValueError, match="no secret key"):
        load_global(
            result.workspace / "global_model.npz", context=kits.server / "startup" / SERVER_CONTEXT
        )
    # The sites decrypted round 1's global model and trained on; the archive got round 2's.
    assert len(result.rounds) == 2
    assert all(0.0 <= dice <= 1.0 for dice in result.final.values())
    state = torch.load(archive / "models" / "model.pt", weights_only=True)
    assert all(torch.isfinite(tensor.float()).all() for tensor in state.values())
    metrics = json.loads((archive / "eval" / "fl_metrics.json").read_text())
    assert metrics["privacy"]["homomorphic_encryption"] is True


def test_encryption_needs_kits_provisioned_for_it(tmp_path: Path) -> None:
    from carina.errors import ConfigError

    project = project_file(tmp_path / "project.yml", name="plain", sites=["a"], port=free_port())
    kits = provision(project, tmp_path / "kits")
    spec = JobSpec(archive=quick_archive(tmp_path / "archive"), sites={"a": "x"}, homomorphic=True)
    with pytest.raises(ConfigError, match=r"HEBuilder .* no TenSEAL context in localhost, a"):
        run_poc(spec, kits, data_dir=tmp_path)


def test_the_documented_project_provisions_and_wrong_names_are_named(tmp_path: Path) -> None:
    import re

    from carina.errors import ConfigError

    page = (Path(__file__).parents[2] / "docs" / "how-to" / "federated.md").read_text()
    documented = re.search(r"```yaml\n# project.yml\n(.*?)```", page, re.S)
    assert documented is not None
    project = tmp_path / "project.yml"
    project.write_text(documented[1])
    assert Kits.find(provision(project, tmp_path / "kits")).server.is_dir()

    project.write_text(documented[1].replace("org: hospital_a", "org: hospital-a"))
    with pytest.raises(ConfigError, match=r"participants\[1\] \(hospital-a\) org 'hospital-a'"):
        provision(project, tmp_path / "again")
    assert not (tmp_path / "again").exists(), "FLARE is not called"
