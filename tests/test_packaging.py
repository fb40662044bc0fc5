"""The wheel a user installs: the steps inside the package (roadmap.steps, no top-level
`steps`), the shipped TOML roadmaps, and a plain word that the committed reference lives only
in a checkout."""

import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

from helpers import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (whl,) = out.glob("roadmap-*.whl")
    return whl


def test_the_wheel_holds_the_steps_inside_the_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "roadmap/steps/paper.py" in names and "roadmap/steps/micro_first.toml" in names
    assert "roadmap/steps/leave_one_out.toml" in names
    assert not [n for n in names if n.startswith("steps/")]  # no top-level package
    assert not [n for n in names if n.startswith(("results/", "tests/"))]


def test_the_installed_wheel_finds_its_steps_and_roadmaps_and_says_where_the_reference_is(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    code = textwrap.dedent("""
        import importlib.util, json
        import roadmap, roadmap.steps
        from roadmap import custom, outputs, runner
        from roadmap.env import Dist
        from pathlib import Path
        print(json.dumps(dict(
            roadmap=roadmap.__file__, steps=roadmap.steps.__file__, n=len(roadmap.steps.ROADMAP),
            top_level_steps=importlib.util.find_spec("steps") is not None,
            shipped=list(custom.examples()), micro=str(custom.find_roadmap_file("micro_first")),
            reference=outputs.REFERENCE_ROOT.is_dir(),
            found=str(runner._reference("reference", "fashion-mnist", Path("x"), True, Dist())),
        )))
    """)
    # the installed copy first on the path, from a folder outside the checkout
    env = dict(os.environ, PYTHONPATH=str(target))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    note, result = proc.stdout.strip().splitlines()[-2:]
    import json

    got = json.loads(result)
    assert got["roadmap"].startswith(str(target)) and got["steps"] == str(target / "roadmap" / "steps" / "__init__.py")
    assert got["n"] == 13 and not got["top_level_steps"]
    assert got["shipped"] == ["leave_one_out", "micro_first"] and got["micro"].startswith(str(target))
    assert not got["reference"] and got["found"] == "None"
    assert "ship with a checkout of the repository, not with an installed package" in note
