"""Jobs written from archives, and the algorithms' arithmetic, without running FLARE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from carina.cli.main import app
from carina.errors import ConfigError, DatasetError
from carina.fl.algorithms import Scaffold, fedprox
from carina.fl.job import Algorithm, JobSpec, Privacy, parse_sites, write_job
from carina.fl.site import site_data
from carina.fl.weights import to_numpy, to_state_dict
from tests.fl.conftest import FL_ARCHIVE

SITES = {"site-1": "spine_ct_vertebra", "site-2": "spine_mr_vertebra"}


def config(job: Path, app_name: str) -> dict[str, Any]:
    kind = "server" if app_name == "app_server" else "client"
    return json.loads((job / app_name / "config" / f"config_fed_{kind}.json").read_text())


def paths(document: Any) -> list[str]:
    found = []
    if isinstance(document, dict):
        if "path" in document:
            found.append(document["path"])
        for value in document.values():
            found += paths(value)
    elif isinstance(document, list):
        for value in document:
            found += paths(value)
    return found


def test_job_carries_configs_and_initial_weights_but_no_data(tmp_path: Path) -> None:
    job = write_job(JobSpec(archive=FL_ARCHIVE, sites=SITES, rounds=2), tmp_path)
    assert job == tmp_path / "spine_vertebra_fl"
    initial = np.load(job / "app_server" / "custom" / "initial_model.npz")
    assert "model.0.conv.unit0.conv.weight" in initial.files
    assert not list(job.glob("app_*/custom/carina")), "Carina is installed, not copied"
    for site, dataset in SITES.items():
        custom = job / f"app_{site}" / "custom"
        assert (custom / "carina_site.py").is_file()
        assert (custom / "carina_archive" / "config" / "config_train.json").is_file()
        assert not list(custom.rglob("*.nii*")) and not list(custom.rglob("*.pt"))
        text = json.dumps(config(job, f"app_{site}"))
        assert dataset in text and "--local-epochs" in text
    server = config(job, "app_server")
    assert "carina.fl.components.ArchivePersistor" in paths(server)
    assert server["workflows"][0]["path"] == "nvflare.app_common.workflows.fedavg.FedAvg"
    assert server["workflows"][0]["args"]["num_rounds"] == 2
    meta = json.loads((job / "meta.json").read_text())
    assert set(meta["deploy_map"]) == {"app_server", "app_site-1", "app_site-2"}


def test_the_initial_weights_are_the_archives_own(tmp_path: Path) -> None:
    """With models/model.pt the job starts from it; without, from the seeded fresh network."""
    first = write_job(JobSpec(archive=FL_ARCHIVE, sites=SITES), tmp_path / "a")
    again = write_job(JobSpec(archive=FL_ARCHIVE, sites=SITES), tmp_path / "b")
    a = np.load(first / "app_server" / "custom" / "initial_model.npz")
    b = np.load(again / "app_server" / "custom" / "initial_model.npz")
    assert all(np.array_equal(a[name], b[name]) for name in a.files), "seeded, reproducible"


@pytest.mark.parametrize(
    ("algorithm", "controller"),
    [
        (Algorithm.FEDPROX, "nvflare.app_common.workflows.fedavg.FedAvg"),
        (Algorithm.FEDOPT, "carina.fl.components.FedOptServer"),
        (Algorithm.SCAFFOLD, "nvflare.app_common.workflows.scaffold.Scaffold"),
    ],
)
def test_algorithms_choose_their_controller(
    tmp_path: Path, algorithm: Algorithm, controller: str
) -> None:
    job = write_job(JobSpec(archive=FL_ARCHIVE, sites=SITES, algorithm=algorithm), tmp_path)
    workflow = config(job, "app_server")["workflows"][0]
    assert workflow["path"] == controller
    assert workflow["args"]["num_rounds"] == 3 and workflow["args"]["num_clients"] == 2
    if algorithm == Algorithm.FEDPROX:
        assert workflow["args"]["fedprox_mu"] == 0.01
    assert f'"{algorithm.value}"' in json.dumps(config(job, "app_site-1"))


def test_privacy_filters_apply_to_weight_differences(tmp_path: Path) -> None:
    privacy = Privacy(percentile=75, svt_fraction=0.5, exclude=["model.2.*"])
    job = write_job(JobSpec(archive=FL_ARCHIVE, sites=SITES, privacy=privacy), tmp_path)
    client = config(job, "app_site-2")
    names = paths(client)
    assert "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy" in names
    assert "nvflare.app_common.filters.svt_privacy.SVTPrivacy" in names
    assert "nvflare.app_common.filters.exclude_vars.ExcludeVars" in names
    assert '"DIFF"' in json.dumps(client), "filters need weight differences, not full weights"
    plain = write_job(JobSpec(archive=FL_ARCHIVE, sites=SITES), tmp_path / "plain")
    assert '"DIFF"' not in json.dumps(config(plain, "app_site-2"))


def test_bad_specs_are_refused_with_the_option_named() -> None:
    with pytest.raises(ConfigError, match="--site"):
        parse_sites(["site-1"])
    with pytest.raises(ConfigError, match="named twice"):
        parse_sites(["a=x", "a=y"])
    with pytest.raises(ConfigError, match="--site"):
        JobSpec(archive=FL_ARCHIVE, sites={"../evil": "spine_ct"})
    with pytest.raises(ConfigError, match="scaffold"):
        JobSpec(
            archive=FL_ARCHIVE,
            sites=SITES,
            algorithm=Algorithm.SCAFFOLD,
            privacy=Privacy(percentile=75),
        )
    with pytest.raises(DatasetError, match="no such dataset folder"):
        site_data("/no/such/folder")
    assert site_data("spine_ct_vertebra") == ({"DATASET": "spine_ct_vertebra"}, None)


def test_cli_writes_a_job_and_names_a_bad_algorithm(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["fl", "job", str(FL_ARCHIVE), "--site", "site-1=spine_ct_vertebra", "-o", str(tmp_path)]
    result = runner.invoke(app, [*args, "--rounds", "2", "--percentile", "75"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "spine_vertebra_fl" / "meta.json").is_file()
    result = runner.invoke(app, [*args, "--algorithm", "fedsgd"])
    assert "fedsgd" in str(result.exception) and "fedavg" in str(result.exception)
    result = runner.invoke(app, [*args, "--he"])
    assert result.exit_code == 0, result.output
    assert "HEModelEncryptor" in json.dumps(config(tmp_path / "spine_vertebra_fl", "app_site-1"))


def test_weights_round_trip_keeps_dtypes() -> None:
    state = {"w": torch.randn(3, 2), "count": torch.tensor(7, dtype=torch.int64)}
    averaged = to_numpy(state)
    averaged["count"] = np.float64(7.4)  # FedAvg turns integers into floats
    back = to_state_dict(averaged, state)
    assert back["count"].dtype == torch.int64 and int(back["count"]) == 7
    assert torch.equal(back["w"], state["w"])
    with pytest.raises(ValueError, match="shape"):
        to_state_dict({"w": np.zeros((2, 3)), "count": np.zeros(())}, state)


class FakeTrainer:
    """Just enough of an ignite engine to register and fire one handler."""

    def __init__(self, network: torch.nn.Module, lr: float = 0.1) -> None:
        self.network = network
        self.optimizer = torch.optim.SGD(network.parameters(), lr=lr)
        self.handlers: list[Any] = []

    def add_event_handler(self, _event: Any, handler: Any) -> None:
        self.handlers.append(handler)

    def fire(self) -> None:
        for handler in self.handlers:
            handler(self)


def test_fedprox_adds_the_proximal_gradient() -> None:
    network = torch.nn.Linear(2, 1)
    start = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    with torch.no_grad():
        network.weight += 1.0
    trainer = FakeTrainer(network)
    fedprox(0.5)(start)(trainer)
    network.weight.grad = torch.zeros_like(network.weight)
    trainer.fire()
    assert torch.allclose(network.weight.grad, torch.full_like(network.weight, 0.5))


def test_scaffold_corrects_gradients_and_updates_its_control_variate() -> None:
    network = torch.nn.Linear(2, 1, bias=False)
    scaffold = Scaffold()
    scaffold.begin_round({"weight": np.full((1, 2), 0.3, np.float32)})
    start = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    trainer = FakeTrainer(network, lr=0.1)
    scaffold.handlers()(start)(trainer)
    network.weight.grad = torch.zeros_like(network.weight)
    trainer.fire()
    assert torch.allclose(network.weight.grad, torch.full_like(network.weight, 0.3))  # c - c_i
    with torch.no_grad():
        network.weight -= 0.2  # the weights moved by 0.2 over 4 steps of lr 0.1
    meta = scaffold.finish(network, steps=4)
    (delta,) = meta.values()
    # c_i' = c_i - c + (w_start - w) / (K lr) = 0 - 0.3 + 0.2 / 0.4 = 0.2
    assert np.allclose(delta["weight"], 0.2) and np.allclose(scaffold.local["weight"], 0.2)


def test_fedopt_server_takes_a_momentum_step() -> None:
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    from carina.fl.components import FedOptServer

    server = FedOptServer(
        optimizer="momentum", server_lr=1.0, beta1=0.5, num_clients=2, num_rounds=2
    )
    model = FLModel(params={"w": np.zeros(2, np.float32)}, params_type=ParamsType.FULL)
    server.event = lambda *_args: None
    server.fl_ctx = type("Ctx", (), {"set_prop": lambda *a, **k: None})()
    for expected in ([1.0, 1.0], [2.5, 2.5]):  # v1 = 1, w = 1; v2 = 0.5 + 1 = 1.5, w = 2.5
        update = FLModel(params={"w": np.ones(2, np.float32)}, params_type=ParamsType.DIFF)
        model = server.update_model(model, update)
        assert np.allclose(model.params["w"], expected)


def test_an_encrypted_job_sums_ciphertexts_the_server_cannot_read(tmp_path: Path) -> None:
    job = write_job(JobSpec(archive=FL_ARCHIVE, sites=SITES, homomorphic=True), tmp_path)
    server = config(job, "app_server")
    assert server["workflows"][0]["path"].endswith("ScatterAndGather")
    components = {item["id"]: item for item in server["components"]}
    assert components["aggregator"]["path"].endswith("HEInTimeAccumulateWeightedAggregator")
    assert components["aggregator"]["args"]["expected_data_kind"] == "WEIGHTS"
    assert components["persistor"]["args"]["filter_id"] == "model_serialize_filter"
    assert components["model_serialize_filter"]["path"].endswith("HEModelSerializeFilter")
    client = config(job, "app_site-1")
    (decryptor,) = client["task_data_filters"]
    (encryptor,) = client["task_result_filters"]
    assert paths(decryptor) == ["nvflare.app_opt.he.model_decryptor.HEModelDecryptor"]
    assert paths(encryptor) == ["nvflare.app_opt.he.model_encryptor.HEModelEncryptor"]
    assert '"DIFF"' not in json.dumps(client), "the sites encrypt full, step-weighted weights"
    for refused in (
        {"algorithm": Algorithm.FEDOPT},
        {"algorithm": Algorithm.SCAFFOLD},
        {"privacy": Privacy(percentile=75)},
    ):
        with pytest.raises(ConfigError, match="--he"):
            JobSpec(archive=FL_ARCHIVE, sites=SITES, homomorphic=True, **refused)


def test_the_simulator_refuses_encryption(tmp_path: Path) -> None:
    from carina.fl.simulate import simulate

    spec = JobSpec(archive=FL_ARCHIVE, sites=SITES, homomorphic=True)
    with pytest.raises(ConfigError, match="carina fl poc"):
        simulate(spec, workspace=tmp_path / "ws", data_dir=tmp_path)
    assert not (tmp_path / "ws").exists()


def test_an_encrypted_global_model_opens_only_with_a_sites_secret_key(tmp_path: Path) -> None:
    """What the server saves after aggregating ciphertexts, and how the POC reads it back."""
    import tenseal as ts

    from carina.fl.components import ArchivePersistor
    from carina.fl.weights import load_global, stored_bytes

    keys = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
    keys.global_scale = 2**40
    site_context = tmp_path / "client_context.tenseal"
    site_context.write_bytes(keys.serialize(save_secret_key=True))
    server_context = tmp_path / "server_context.tenseal"
    server_context.write_bytes(keys.serialize(save_secret_key=False))
    state = {"conv.weight": torch.randn(4, 3, 3), "norm.count": torch.tensor(4)}
    sites = [to_numpy(state), {name: value * 3 for name, value in to_numpy(state).items()}]
    steps = [10, 30]
    # As FLARE's HE filters and aggregator do: each site weighs by its steps and encrypts its
    # flattened tensors; the server adds the ciphertexts and divides by the total steps.
    total: dict[str, Any] = {}
    for weights, count in zip(sites, steps, strict=True):
        for name, value in weights.items():
            encrypted = ts.ckks_vector(keys, (value.ravel() * count).tolist())
            total[name] = encrypted if name not in total else total[name] + encrypted
    aggregate = {name: (vector * (1 / sum(steps))).serialize() for name, vector in total.items()}
    run = tmp_path / "run"
    run.mkdir()
    workspace = type("Workspace", (), {"get_run_dir": lambda _self, _job: str(run)})()
    engine = type("Engine", (), {"get_workspace": lambda _self: workspace})()
    context = type(
        "Ctx", (), {"get_engine": lambda _self: engine, "get_job_id": lambda _self: "job"}
    )()
    ArchivePersistor().save_model({"weights": aggregate, "meta": {}}, context)
    saved = run / "global_model.npz"
    assert stored_bytes(saved) > 20 * sum(v.nbytes for v in sites[0].values()), "ciphertexts"
    with pytest.raises(ValueError, match=r"client_context\.tenseal"):
        load_global(saved)
    with pytest.raises(ValueError, match="no secret key"):
        load_global(saved, context=server_context)
    decrypted = to_state_dict(load_global(saved, context=site_context), state)
    expected = state["conv.weight"] * (10 + 3 * 30) / 40
    assert torch.allclose(decrypted["conv.weight"], expected, atol=1e-4)
    assert int(decrypted["norm.count"]) == 4 * (10 + 3 * 30) // 40
