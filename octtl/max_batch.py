"""Finds the largest batch each network trains at on this machine (the paper's Table I "BS" column).

  python -m octtl.max_batch --arch=vgg16 [--image_size=224] [--logdir=runs]
  python -m octtl.max_batch                      # every network

Doubles the batch from 8 until a training step runs out of accelerator memory and keeps the last that fitted
(see octtl/study/batch_probe.py). Writes LOGDIR/max_batch.json, merged with the networks measured before; the sweep's
`--batches=auto` reads it from there (`--max_batch_file` elsewhere). Without a GPU it measures host memory,
and says so: that number is not a GPU's.
"""

import os

from absl import flags

from octtl.nets import registry
from octtl.study import batch_probe
from octtl import cli, console
from octtl.errors import InputError
from octtl import runs

_MAX_BATCH = flags.DEFINE_integer("max_batch", 256, "Largest batch tried (a power of two).", lower_bound=1)

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("arch")
flags.declare_key_flag("image_size")
flags.declare_key_flag("logdir")
flags.declare_key_flag("output")
flags.declare_key_flag("mixed_precision")
flags.declare_key_flag("jit_compile")



def main(argv):
    """The max_batch command: measures each network's largest batch into its file (LOGDIR/max_batch.json)."""
    cli.no_arguments(argv)
    archs = list(registry.ARCHITECTURES) if cli.ARCH.value in (None, "all") else [cli.ARCH.value]
    for arch in archs:
        size = registry.input_size(arch, cli.IMAGE_SIZE.value)
        if size < registry.get(arch).min_input_size:
            raise InputError(f"--image_size={size}: {arch} needs at least {registry.get(arch).min_input_size}")
    console.start_backend()
    from octtl.nets import devices

    gpus = devices.configure(cli.MIXED_PRECISION.value)
    if gpus:
        name = devices.gpu_name()
        device = f"GPU {name}"
        print(f"max_batch: measuring GPU memory on {name}" + (f" (the first of {len(gpus)})" if len(gpus) > 1 else ""))
    else:
        available = batch_probe.host_available_bytes()
        device = "CPU (host memory)"
        print("max_batch: no GPU: measuring host memory"
              + (f" ({available / 2**30:.1f} GiB available)" if available else "")
              + "; the result is not a GPU batch size")
    path = cli.OUTPUT.value or os.path.join(cli.LOGDIR.value, runs.MAX_BATCH)
    for arch in archs:
        size = registry.input_size(arch, cli.IMAGE_SIZE.value)
        entry = batch_probe.probe(arch, size, bool(gpus), _MAX_BATCH.value, cli.MIXED_PRECISION.value,
                                  cli.JIT_COMPILE.value)
        # Written after each network, so an interrupted probe keeps what it measured.
        batch_probe.write_table(path, {arch: entry}, device)
        tried = ", ".join(f"{b}: {outcome}" for b, outcome in entry["tried"].items())
        cap = f" (the --max_batch={_MAX_BATCH.value} cap; more may fit)" if entry["capped"] else ""
        print(f"max_batch: {arch} at {size} px: largest batch {entry['largest_batch']}{cap} "
              f"[Table I: {registry.get(arch).largest_batch}; tried {tried}]", flush=True)
    print(f"max_batch: table in {path}")


run = cli.command(main)

if __name__ == "__main__":
    run()
