"""Every command-line flag, and flags -> RunConfig. The only module that reads FLAGS.

`configs/*.cfg` are absl flagfiles over these flags; later flags on the command line
override earlier ones (`--flagfile=configs/quickstart.cfg --epochs=5`).
"""

from __future__ import annotations

import functools
import shutil
import sys
import textwrap
from typing import Callable, List, Optional, Sequence, Tuple

from absl import app, flags

from rae_keras import config as config_lib
from rae_keras import data as data_lib, schemes

FLAGS = flags.FLAGS

# What to train.
flags.DEFINE_string("name", "run", "Run name; default model_dir runs/NAME, export exported/NAME.")
flags.DEFINE_enum("scheme", "recursive", schemes.SCHEMES.names, schemes.SCHEMES.describe())
flags.DEFINE_integer("epochs", 1, "Epochs; per stage for recursive schemes.")
flags.DEFINE_integer("finetune_epochs", 3,
                     "recursive_finetune, recursive_depths: epochs of the whole model "
                     "after the recursive stages.")
flags.DEFINE_list("level_weights", [],
                  "N loss weights: joint's levels 0..N-1 (level 0 = the image), "
                  "recursive_depths' depths 1..N; empty = all 1.")
flags.DEFINE_integer("batch_size", 32,
                     "Batch size per replica; the global batch is this times the replicas.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (a new optimizer per stage).")
flags.DEFINE_enum("learning_rate_schedule", "constant", config_lib.LEARNING_RATE_SCHEDULES,
                  "constant, or cosine: each phase decays its learning rate from "
                  "--learning_rate to 0 over its own steps.")
flags.DEFINE_integer("seed", 0, "Seed for initialization, shuffling and the identity split.")
flags.DEFINE_integer("summary_images", 8, "Faces shown in the TensorBoard image grids.")

flags.DEFINE_bool("mixed_precision", False,
                  "mixed_bfloat16 on CPU, mixed_float16 (with loss scaling) on GPU; the output "
                  "sigmoid and the losses stay float32.")
flags.DEFINE_bool("cache_frozen_prefix", False,
                  "Recursive stages: compute the frozen encoders' output h_(k-1) once per "
                  "stage instead of every step (exact: frozen layers run in inference mode).")
flags.DEFINE_integer("steps_per_execution", 1, "Training steps per tf.function call.")

# Where to train.
flags.DEFINE_enum("strategy", "auto", config_lib.STRATEGIES,
                  "tf.distribute strategy: auto (mirrored over several GPUs or --cpu_devices, "
                  "else one device) | one_device | mirrored | multi_worker (reads TF_CONFIG).")
flags.DEFINE_integer("cpu_devices", 0,
                     "Split the CPU into N logical devices (runs the distributed path "
                     "without GPUs).")

# The network.
flags.DEFINE_list("filters", ["8", "16"], "Filters of e_1..e_N (one stage each).")
flags.DEFINE_list("kernel_sizes", ["3"], "Encoder kernel sizes: one, or one per stage.")
flags.DEFINE_list("decoder_kernel_sizes", [],
                  "Decoder kernel sizes: one, or one per stage; empty = the encoder's.")
flags.DEFINE_string("activation", "selu", "Activation of every layer but d_1 (sigmoid).")
flags.DEFINE_enum("normalization", "none", config_lib.NORMALIZATIONS,
                  "none | batch (after every layer) | shared_batch (one per h_k).")
flags.DEFINE_string("kernel_initializer", "lecun_normal", "Keras initializer of every layer.")

# The data.
flags.DEFINE_enum("dataset", "lfw_subset", data_lib.SOURCES.names, data_lib.SOURCES.describe())
flags.DEFINE_string("data_dir", None,
                    "folder: the image folder; lfw: the folder holding a local lfw.tgz.")
flags.DEFINE_string("tfds_data_dir", None, "Where TFDS keeps prepared data sets.")
flags.DEFINE_string("tfds_name", "",
                    "--dataset=tfds: the TFDS image builder, name[/config][:version].")
flags.DEFINE_string("cache_dir", None,
                    "Preprocessed-image cache (default $RAE_KERAS_CACHE, else "
                    "~/.cache/rae_keras); rebuilt when the source changes.")
flags.DEFINE_integer("crop", 0, "Central square crop in source pixels (0: largest square).")
flags.DEFINE_integer("image_size", 32, "Images are resized to image_size x image_size.")
flags.DEFINE_enum("channels", "1", ["1", "3"], "1 = grayscale, 3 = RGB.")
flags.DEFINE_integer("max_images", 0, "Use at most this many training images (0: all).")
flags.DEFINE_float("test_fraction", 0.1, "Fraction of identities held out for testing.")

# Where things go.
flags.DEFINE_string("model_dir", None, "Run directory (default runs/NAME).")
flags.DEFINE_string("export_dir", None,
                    "Export base. train: default exported/NAME, an empty value skips the "
                    "export. export: default exported/<basename of --model_dir>; never taken "
                    "from the run's config.json.")
flags.DEFINE_bool("overwrite", False,
                  "train: delete a model_dir that holds another configuration instead of "
                  "refusing; export: replace an existing --version.")
flags.DEFINE_integer("version", None, "export: version to write (default: the next integer).")
flags.DEFINE_bool("tflite", True, "Also write TFLite models next to the SavedModel.")
flags.DEFINE_bool("allow_unfinished", False,
                  "export: also export a run whose training has not finished (its newest "
                  "checkpoint); rae_config.json then says finished: false, with the phase "
                  "and epoch.")


# evaluate.
flags.DEFINE_list("models", [],
                  "evaluate: export bases (exported/NAME, latest version) or version dirs.")
flags.DEFINE_string("output_dir", None, "evaluate: where metrics.json, report.md and figures go.")
flags.DEFINE_enum("split", "test", ["test", "all"],
                  "evaluate: the test identities of the data set (split as training split "
                  "it) or every image.")

# --help: the flags above, by concern (a flag defined here but missing from GROUPS is
# listed under "Other"; tests/test_cli_output.py keeps GROUPS complete).
Groups = Sequence[Tuple[str, Sequence[str]]]
GROUPS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("What to train", ("name", "scheme", "epochs", "finetune_epochs", "level_weights",
                       "batch_size", "learning_rate", "learning_rate_schedule", "seed",
                       "mixed_precision", "cache_frozen_prefix", "steps_per_execution")),
    ("The network", ("filters", "kernel_sizes", "decoder_kernel_sizes", "activation",
                     "normalization", "kernel_initializer")),
    ("The data", ("dataset", "data_dir", "tfds_data_dir", "tfds_name", "crop", "image_size",
                  "channels", "max_images", "test_fraction", "cache_dir")),
    ("Where things go", ("model_dir", "export_dir", "overwrite", "version", "tflite",
                         "allow_unfinished", "summary_images")),
    ("Distribution", ("strategy", "cpu_devices")),
    ("evaluate", ("models", "output_dir", "split")),
)
_HELP_ARGS = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")
_HELP_FOOTER = (
    "Flags are --name=value; --flagfile=FILE reads them from a file (configs/*.cfg), later "
    "flags override earlier ones. --verbosity=0 also shows TensorFlow's own logs; "
    "--helpfull lists absl's flags too.")


def _flag_line(flag: flags.Flag) -> Tuple[str, str]:
    """(`--name=default`, help) of one flag, as --help shows it."""
    if flag.flag_type() == "bool":
        left = f"--[no]{flag.name}"
        default = "true" if flag.default else "false"
        text = f"{flag.help} (default {default})"
    else:
        value = flag.default_as_str if flag.default is not None else ""
        value = value.strip("'") if value else ""
        left = f"--{flag.name}={value}" if value else f"--{flag.name}="
        text = flag.help
    choices = getattr(getattr(flag, "parser", None), "enum_values", None)
    if choices and not all(c in text for c in choices):
        text += f" One of: {' | '.join(choices)}."
    return left, text


def help_text(usage: str = "", extra_groups: Sequence[Tuple[str, Sequence[str]]] = (),
              width: Optional[int] = None, only: Optional[Groups] = None) -> str:
    """The project's flags grouped by concern, each with its default and help; `only`:
    a command that reads just a few of them lists those groups alone."""
    width = width or max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    groups = [(title, list(names))
              for title, names in tuple(GROUPS if only is None else only) + tuple(extra_groups)]
    listed = {name for _, names in groups for name in names}
    others = [f.name for f in FLAGS.get_flags_for_module(__name__) if f.name not in listed]
    if others and only is None:
        groups.append(("Other", sorted(set(others))))
    lines = [usage.strip(), ""] if usage.strip() else []
    column = 30
    for title, names in groups:
        lines.append(f"{title}:")
        for name in names:
            if name not in FLAGS:
                continue
            left, text = _flag_line(FLAGS[name])
            body = textwrap.wrap(" ".join(text.split()), width - column - 1) or [""]
            if len(left) + 2 >= column:
                lines.append(f"  {left}")
                lines.extend(" " * column + line for line in body)
            else:
                lines.append(f"  {left:<{column - 2}}{body[0]}")
                lines.extend(" " * column + line for line in body[1:])
        lines.append("")
    lines.extend(textwrap.wrap(_HELP_FOOTER, width))
    return "\n".join(lines) + "\n"


def _usage() -> str:
    """The first paragraph of the running command's docstring (its usage line)."""
    doc = getattr(sys.modules.get("__main__"), "__doc__", None) or ""
    return doc.strip().split("\n\n")[0]


def parse_flags_or_exit(argv: List[str],
                        extra_groups: Sequence[Tuple[str, Sequence[str]]] = (),
                        only: Optional[Groups] = None) -> List[str]:
    """absl parsing of argv (argv[0] is the program). --help / -h print the grouped flags
    and exit 0; a bad flag value is a one-line error (no usage dump) and exit 2."""
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg in _HELP_ARGS:
            sys.stdout.write(help_text(_usage(), extra_groups, only=only))
            sys.exit(0)
    try:
        remaining = FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if "verbosity" in FLAGS and FLAGS["verbosity"].using_default_value:
        FLAGS.verbosity = -1  # WARNING; absl.app.run would raise an unset one to INFO
    return remaining


def _numbers(name: str, values: Sequence[str], kind: type) -> tuple:
    try:
        return tuple(kind(v) for v in values)
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise config_lib.ConfigError(
            f"--{name} takes comma-separated {what}, got {','.join(values)!r}")


def data_config_from_flags() -> config_lib.DataConfig:
    return config_lib.DataConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, tfds_data_dir=FLAGS.tfds_data_dir,
        tfds_name=FLAGS.tfds_name,
        crop=FLAGS.crop, image_size=FLAGS.image_size, channels=int(FLAGS.channels),
        max_images=FLAGS.max_images, test_fraction=FLAGS.test_fraction, seed=FLAGS.seed)


def run_config_from_flags() -> config_lib.RunConfig:
    """The driver's one translation of flags into the config passed everywhere."""
    name = FLAGS.name
    model_dir = FLAGS.model_dir or f"runs/{name}"
    export_dir = f"exported/{name}" if FLAGS.export_dir is None else FLAGS.export_dir
    return config_lib.RunConfig(
        name=name,
        model_dir=model_dir,
        export_dir=export_dir,
        data=data_config_from_flags(),
        model=config_lib.ModelConfig(
            filters=_numbers("filters", FLAGS.filters, int),
            kernel_sizes=_numbers("kernel_sizes", FLAGS.kernel_sizes, int),
            decoder_kernel_sizes=_numbers("decoder_kernel_sizes", FLAGS.decoder_kernel_sizes, int),
            activation=FLAGS.activation, normalization=FLAGS.normalization,
            kernel_initializer=FLAGS.kernel_initializer),
        train=config_lib.TrainConfig(
            scheme=FLAGS.scheme, epochs=FLAGS.epochs, finetune_epochs=FLAGS.finetune_epochs,
            level_weights=_numbers("level_weights", FLAGS.level_weights, float),
            batch_size=FLAGS.batch_size,
            learning_rate=FLAGS.learning_rate,
            learning_rate_schedule=FLAGS.learning_rate_schedule, seed=FLAGS.seed,
            summary_images=FLAGS.summary_images, mixed_precision=FLAGS.mixed_precision,
            cache_frozen_prefix=FLAGS.cache_frozen_prefix,
            steps_per_execution=FLAGS.steps_per_execution),
        distribute=config_lib.DistributeConfig(strategy=FLAGS.strategy,
                                               cpu_devices=FLAGS.cpu_devices),
    ).validate()


def run_main(main: Callable[[List[str]], None], expected_errors: tuple,
             help_groups: Optional[Groups] = None) -> None:
    """absl.app.run, turning `expected_errors` into `error: MESSAGE` and exit code 1;
    `help_groups`: what --help lists, when not every group applies to the command."""

    def guarded(argv):
        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]}; flags look like --name=value",
                  file=sys.stderr)
            sys.exit(2)
        try:
            main(argv)
        except expected_errors as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    app.run(guarded, flags_parser=functools.partial(parse_flags_or_exit, only=help_groups))
