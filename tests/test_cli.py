"""The command edge: every command answers --help with its own flags and exit 0, however it is started, and fast.

`python -m octtl.X --help`, the installed console script `octtl-X --help` and the tools/ shims must print the
same flags (absl's help reads the running script's key flags, which octtl.cli.command lends it), exit 0 so that
`&&` chains go on, and never start TensorFlow. The built wheel, installed outside the source tree, must answer
too: a package or data file that setup.cfg leaves out shows there first.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

COMMANDS = ("train", "sweep", "max_batch", "report", "predict", "export", "make_synthetic", "to_tfrecord",
            "import_torchvision_weights")
SHIMS = ("make_synthetic", "to_tfrecord", "import_torchvision_weights")
# Where the command's own flags are listed: absl prints a header naming the module, then the flags.
FLAG = re.compile(r"^  --(?:\[no\])?(\w+)", re.M)


def _help(argv, cwd=REPO, env=None):
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env=env or dict(os.environ))
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def module_help():
    return {c: _help([sys.executable, "-m", f"octtl.{c}"]) for c in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_zero_with_the_commands_flags(module_help, command):
    code, text = module_help[command]
    assert code == 0, text
    names = set(FLAG.findall(text))
    assert names and "help" not in names
    module = __import__(f"octtl.{command}", fromlist=["main"])
    assert module.__doc__.strip().splitlines()[0] in text  # the usage is the command's docstring


def test_train_help_lists_every_setting_of_a_run(module_help):
    import dataclasses

    from octtl.training.config import Config

    listed = set(FLAG.findall(module_help["train"][1]))
    assert {field.name for field in dataclasses.fields(Config)} <= listed


@pytest.mark.parametrize("command", COMMANDS)
def test_console_script_lists_the_same_flags(module_help, command):
    script = shutil.which(f"octtl-{command.replace('_', '-')}")
    if script is None:
        pytest.skip(f"octtl-{command} is not installed (pip install -e . installs the console scripts)")
    code, text = _help([script])
    assert code == 0, text
    assert sorted(FLAG.findall(text)) == sorted(FLAG.findall(module_help[command][1]))


@pytest.mark.parametrize("command", SHIMS)
def test_tools_shim_lists_the_same_flags(module_help, command):
    code, text = _help([sys.executable, str(REPO / "tools" / f"{command}.py")])
    assert code == 0, text
    assert sorted(FLAG.findall(text)) == sorted(FLAG.findall(module_help[command][1]))


def test_help_starts_no_tensorflow():
    probe = ("import sys\n"
             "import octtl.train, octtl.sweep, octtl.report, octtl.predict, octtl.export, octtl.max_batch, "
             "octtl.make_synthetic, octtl.to_tfrecord, octtl.import_torchvision_weights\n"
             "print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_the_built_wheel_answers_every_command(tmp_path):
    """The wheel, installed into a fresh folder and imported from outside the source tree (no editable finder)."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = wheels.glob("octtl-*.whl")
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONNOUSERSITE="1")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([sys.executable, "-c", "import octtl, octtl.nets.pretrained as p; print(octtl.__file__); "
                            "print(sorted(f.name for f in p.PACKAGED_DIR.iterdir()))"],
                           capture_output=True, text=True, cwd=outside, env=env, timeout=60)
    assert where.returncode == 0, where.stderr
    location, packaged = where.stdout.splitlines()
    assert pathlib.Path(location).is_relative_to(target)
    assert "LICENSE.squeezenet" in packaged and "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5" in packaged
    for command in COMMANDS:
        code, text = _help([sys.executable, "-m", f"octtl.{command}"], cwd=outside, env=env)
        assert code == 0 and FLAG.search(text), f"{command}: {text[-1500:]}"
    # Every subpackage of the source tree is in the wheel.
    source = {str(p.parent.relative_to(REPO)) for p in (REPO / "octtl").rglob("__init__.py")}
    installed = {str(p.parent.relative_to(target)) for p in (target / "octtl").rglob("__init__.py")}
    assert source <= installed, source - installed
