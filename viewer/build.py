"""Rebuild the viewer's vendored JavaScript from ``package-lock.json`` (``make viewer-assets``).

Runs ``npm ci`` here, copies Niivue's browser build into the server's package data
(``src/carina/server/viewer/static/vendor/``) and writes ``LICENSES.md`` there: every npm package
whose code is inside that build (Niivue's bundle metadata names them), with its version, licence
and licence text. Needs Node.js and npm, at development time only; nothing is fetched at run time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE.parent / "src" / "carina" / "server" / "viewer" / "static" / "vendor"
NIIVUE = HERE / "node_modules" / "@niivue" / "niivue"
#: The UMD build: minified, self-contained, exposes ``window.niivue``; no eval (the page's CSP).
BUILD = "dist/niivue.umd.js"
LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "license", "LICENCE", "COPYING")


def bundled_packages() -> list[str]:
    """The npm packages whose sources went into Niivue's build (from its esbuild metafile)."""
    metafile = json.loads((NIIVUE / "dist" / "metafile-esm.json").read_text())
    names = {"@niivue/niivue"}
    for source in metafile["inputs"]:
        if "node_modules/" not in source:
            continue
        parts = source.rsplit("node_modules/", 1)[1].split("/")
        names.add("/".join(parts[:2]) if parts[0].startswith("@") else parts[0])
    return sorted(names)


def licence_entry(name: str) -> str:
    folder = NIIVUE if name == "@niivue/niivue" else HERE / "node_modules" / name
    meta = json.loads((folder / "package.json").read_text())
    text = next(
        ((folder / f).read_text().strip() for f in LICENCE_FILES if (folder / f).is_file()),
        "(the package ships no licence file; its package.json names the licence above)",
    )
    return f"## {name} {meta['version']}: {meta.get('license', 'unknown')}\n\n```\n{text}\n```\n"


def main() -> None:
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    VENDOR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NIIVUE / BUILD, VENDOR / "niivue.umd.js")
    version = json.loads((NIIVUE / "package.json").read_text())["version"]
    entries = [licence_entry(name) for name in bundled_packages()]
    header = (
        "# Third-party code in the viewer\n\n"
        f"`niivue.umd.js` is `{BUILD}` of @niivue/niivue {version}, copied unchanged by "
        "`viewer/build.py` from `viewer/package-lock.json`. It bundles the packages below.\n\n"
    )
    (VENDOR / "LICENSES.md").write_text(header + "\n".join(entries))
    print(f"vendored @niivue/niivue {version} and {len(entries)} licences into {VENDOR}")


if __name__ == "__main__":
    sys.exit(main())
