"""Docs against the shipped data: every documented click lies in the structure its example names,
on the image ``carina data export`` writes, and the Dice figures the docs quote are the zoo's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from carina.data import export_dataset
from carina.io import load_volume
from carina.zoo import load_index

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: A code block whose clicks are checked: ``<!-- clicks: IMAGE STRUCTURE -->`` on the line before
#: it, IMAGE the stem of an exported image (``spine_ct_heldout``), STRUCTURE a label name.
MARKED = re.compile(
    r"^<!-- clicks: (?P<image>\w+) (?P<structure>[^>]+?) -->\n```\w*\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
#: Clicks as the command line takes them (``--fg 16,20,7``) and as Python and JSON write them
#: (``foreground=[[16, 20, 7]]``, ``"foreground": [[16, 20, 7]]``).
CLICK = re.compile(
    r"--(?P<flag>fg|bg|point)[ =](?P<cli>\d+,\d+,\d+)"
    r"|\b(?P<key>foreground|background|points)\"?\s*[=:]\s*(?P<list>\[\[[\d,\s\[\]]*\]\])"
)
KIND = {"fg": "foreground", "bg": "background", "point": "points"}
#: A voxel index ``[i, j, k]``, and a call of an interactive model given one.
VOXEL = re.compile(r"\[\s*\d+,\s*\d+,\s*\d+\s*\]")
CALL = re.compile(r"\b(?:deepgrow|dextr3d|annotate)\([^)]*\[\s*\d+,\s*\d+,\s*\d+\s*\]")
#: A foreground click this many voxels from the structure's edge is clearly inside it.
DEPTH = 3.0


def clicks(text: str) -> Iterator[tuple[int, str, list[int]]]:
    """Each documented click in ``text``: its offset, its kind and its ``[i, j, k]``."""
    for match in CLICK.finditer(text):
        if match["cli"]:
            yield match.start(), KIND[match["flag"]], [int(v) for v in match["cli"].split(",")]
        else:
            for point in json.loads(match["list"]):
                yield match.start(), match["key"], point


def marked_blocks() -> list[tuple[str, str, str, str]]:
    """Every marked block: page, image, structure, code."""
    return [
        (str(page.relative_to(ROOT)), m["image"], m["structure"], m["code"])
        for page in MARKDOWN
        for m in MARKED.finditer(page.read_text())
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exported")


def structure_mask(folder: Path, image: str, structure: str) -> tuple[np.ndarray, np.ndarray]:
    """The label map of the exported ``image`` and the mask of ``structure`` in it."""
    dataset = image.rsplit("_", 1)[0]
    manifest = folder / dataset / "dataset.json"
    if not manifest.is_file():
        export_dataset(dataset, folder / dataset)
    names = {name: int(value) for value, name in json.loads(manifest.read_text())["labels"].items()}
    assert structure in names, f"{dataset} has no structure {structure!r} (it has {list(names)})"
    labels = np.asarray(load_volume(folder / dataset / "labelsTr" / f"{image}.nii.gz").array)
    return labels, labels == names[structure]


def test_every_documented_click_is_in_a_marked_block() -> None:
    unchecked = []
    for page in MARKDOWN:
        text = page.read_text()
        spans = [m.span() for m in MARKED.finditer(text)]
        found = [(o, f"{kind} {point}") for o, kind, point in clicks(text)]
        found += [(m.start(), m[0]) for m in CALL.finditer(text)]
        for offset, click in found:
            if not any(start <= offset < end for start, end in spans):
                unchecked.append(f"{page.relative_to(ROOT)}: {click}")
    assert not unchecked, f"mark these blocks with <!-- clicks: IMAGE STRUCTURE -->: {unchecked}"


@pytest.mark.parametrize(("page", "image", "structure", "code"), marked_blocks())
def test_documented_clicks_are_in_their_structure(
    exported: Path, page: str, image: str, structure: str, code: str
) -> None:
    assert f"{image}.nii.gz" in code, f"{page}: the block does not use {image}.nii.gz"
    labels, mask = structure_mask(exported, image, structure)
    depth = ndimage.distance_transform_edt(mask)
    found = list(clicks(code))
    assert found, f"{page}: a block marked for clicks has none"
    for _, kind, point in found:
        assert len(point) == 3 and all(0 <= v < n for v, n in zip(point, labels.shape, strict=True))
        where = f"{page}: {kind} {point} on {image} (label {labels[tuple(point)]})"
        if kind == "background":
            assert not mask[tuple(point)], f"{where} is in {structure}"
        elif kind == "foreground":
            assert depth[tuple(point)] >= DEPTH, f"{where} is not well inside {structure}"
        else:
            assert mask[tuple(point)], f"{where} is not on {structure}"


def test_readme_dice_is_the_zoos() -> None:
    readme = (ROOT / "README.md").read_text()
    quoted = re.findall(
        r"carina validate examples/archives/(\w+) .*held-out mean Dice ([\d.]+)", readme
    )
    assert quoted, "the README quotes no held-out Dice"
    index = load_index()
    for name, figure in quoted:
        measured = index[name].metrics["mean_dice"]
        assert figure == f"{measured:.{len(figure.split('.')[1])}f}", f"{name}: zoo {measured}"


def test_zoo_reference_dice_is_the_zoos() -> None:
    table = (ROOT / "docs" / "reference" / "zoo.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|.*\| ([^|]+) \|$", table, re.MULTILINE)
    index = load_index()
    assert {name for name, _ in rows} == set(index)
    for name, cell in rows:
        metrics = index[name].metrics
        single = re.match(r"([\d.]+)( \(mean|$)", cell)
        span = re.match(r"([\d.]+)-([\d.]+) on the (\d+ )?vertebrae", cell)
        if single:
            assert single[1] == f"{metrics['mean_dice']:.2f}", f"{name}: {metrics['mean_dice']}"
        elif span:
            scores = [v for label, v in metrics["per_label"].items() if "disc" not in label]
            assert (span[1], span[2]) == (f"{min(scores):.2f}", f"{max(scores):.2f}"), name
            assert not span[3] or int(span[3]) == len(scores), f"{name}: {len(scores)} vertebrae"
        else:
            assert "carina zoo list" in cell, f"{name}: {cell!r} quotes no figure the test knows"
