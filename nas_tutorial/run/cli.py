"""The ``nas-tutorial`` command: inspect and train genotypes, run the searches.

The only place with argparse. One error path: every expected failure (bad input, an
unusable run folder or checkpoint, a diverged search, out of memory, a dataset that cannot
be loaded) ends with exit code 2 and one line, ``nas-tutorial: error: ...``, saying what was
wrong and what to do; ``--debug`` adds the traceback. Anything else is a bug and keeps its
traceback. Inputs and run folders are checked before any work starts (see
:mod:`nas_tutorial.run.folders`); an interrupted search resumes with ``--resume DIR``.

Under ``torchrun --nproc_per_node=N -m nas_tutorial.run.cli train|search ...`` every process
runs the same command data-parallel (:mod:`nas_tutorial.distributed`); rank 0 alone prints
and writes the run folder. ``info`` and ``table`` run in one process.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import traceback

import torch

from .. import distributed
from ..checkpoints import write_json
from ..config import PRESETS, get_preset, preset_name
from ..data import DATASETS, DatasetUnavailable
from ..devices import threads
from ..flops import count_flops
from ..genotypes import GenotypeError, resolve
from ..network import NetworkCIFAR, count_params
from ..training import Diverged, train_genotype  # Diverged: pc_darts.SearchDiverged is one
from ..teaching.exercises import make_student_copies
from ..teaching.handouts import write_handouts
from ..viz import draw_genotype, plot_history, save_html, save_svg
from . import searches
from .folders import RunFinished, check_new, claim, clear, holds
from .tables import TableError, cli_table

EXIT_USAGE = 2
PROG = "nas-tutorial"


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see {self.prog} --help)\n")


# Upper bounds, checked before any work: past them a run would not finish or fit, and
# the failure would come late (a seed over torch's range after ten PNAS children).
MAX_SEED = 2 ** 32 - 1     # torch.manual_seed takes < 2**63 signed; derived seeds (PNAS:
#                            seed * 100 + b, PC-DARTS: seed + 1) must stay inside it too
MAX_EPOCHS = 10_000        # DARTS's evaluation: 600
MAX_POPULATION = 10_000    # SPOS: 50 paths a generation
MAX_GENERATIONS = 10_000   # SPOS: 20
MAX_BEAM = 10_000          # PNAS: K = 256
MAX_BLOCKS = 5             # PNAS's space (pnas.MAX_BLOCKS, Sec. 3.1)
MAX_LAYERS = 1_000         # cells in a network (DARTS: 20); even the shape-only build is slow


def _positive(kind=int, most=None):
    """A number > 0 (finite, for floats: nan and inf are refused), at most ``most``."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
        if not value > 0 or value == float("inf"):  # `not >`: NaN fails every comparison
            raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"expected a number from 1 to {most:,}, "
                                             f"got '{text}'")
        return value
    return parse


def _nonneg_int(text, most=MAX_SEED):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'")
    if not 0 <= value <= most:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {most:,}, "
                                         f"got '{text}'")
    return value


def _device(text):
    """``--device``: auto, cpu, cuda or cuda:N, refused at once when this machine lacks it."""
    try:
        device = torch.device(text) if text != "auto" else None
    except RuntimeError:
        device = torch.device("meta")  # not a device name: refused below
    if device is None or device.type == "cpu":
        return text
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got '{text}'")
    if not torch.cuda.is_available():
        why = "no GPU visible" if torch.version.cuda else "this torch is built without CUDA"
        raise argparse.ArgumentTypeError(f"'{text}': no CUDA device here ({why}); use "
                                         f"--device cpu or auto")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise argparse.ArgumentTypeError(f"'{text}': this machine has {count} CUDA device(s), "
                                         f"cuda:0..cuda:{count - 1}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Neural architecture search you can run and read.")
    p.add_argument("--threads", dest="cpu_threads", type=_positive(), default=1, metavar="N",
                   help="torch CPU threads (default 1: fastest for these small networks; "
                        "the notebooks use the same rule)")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an expected error too (a bug always shows it)")
    # --debug is also understood after the command (SUPPRESS: not given there, the global
    # value stands)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", type=_device, default="auto",
                        help="auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", parents=[debug],
                          help="parameters and FLOPs of a genotype's network")
    info.add_argument("genotype", help="a published genotype name or a genotype JSON file")
    info.add_argument("--channels", type=_positive(), default=36, help="initial channels C")
    info.add_argument("--layers", type=_positive(most=MAX_LAYERS), default=20,
                      help="number of cells")
    info.add_argument("--auxiliary", action="store_true", help="build the auxiliary head")
    info.add_argument("--num-classes", type=_positive(), default=10)
    info.add_argument("--image-size", type=_positive(), default=32)
    info.add_argument("--json", action="store_true", help="print one JSON object")

    train = sub.add_parser("train", parents=[debug, device],
                           help="train a genotype's network briefly")
    train.add_argument("genotype", help="a published genotype name or a genotype JSON file")
    train.add_argument("--preset", choices=list(PRESETS), default=None)
    train.add_argument("--epochs", type=_positive(most=MAX_EPOCHS), default=None)
    train.add_argument("--seed", type=_nonneg_int, default=0)
    train.add_argument("--out", default=None, help="folder for the curves and the drawing "
                       "(a new or empty one)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the files of an earlier run in --out")

    search = sub.add_parser("search", parents=[debug],
                            help="run a search: pc-darts, darts, spos or pnas")
    methods = search.add_subparsers(dest="method", required=True, metavar="METHOD")
    common = argparse.ArgumentParser(add_help=False, parents=[debug, device])
    common.add_argument("--seed", type=_nonneg_int, default=None, help="default 0")
    common.add_argument("--out", default=None, help="run folder of a new run (default "
                        "runs/METHOD-...); one holding a run is refused unless --overwrite")
    common.add_argument("--resume", default=None, metavar="DIR",
                        help="continue an interrupted run in its folder, with its saved "
                             "settings (a flag given must agree with them)")
    common.add_argument("--overwrite", action="store_true",
                        help="replace the run in --out (its run files are deleted first)")
    common.add_argument("--threads", dest="search_threads", type=_positive(), default=None,
                        metavar="N", help="torch CPU threads for this search (default: the "
                        "global --threads, 1: fastest for these small networks)")
    for name in ("pc-darts", "darts"):
        m = methods.add_parser(name, parents=[common], help=f"{name} differentiable search")
        m.add_argument("--preset", choices=list(PRESETS) + ["long"], default=None,
                       help="quick (CPU minutes), long (the quick search given tens of "
                            "minutes), gpu (a few GPU minutes, the notebooks' choice on a "
                            "GPU), full (the paper's, GPU hours)")
        m.add_argument("--k", type=_positive(), default=None, help="partial-channel 1/K")
        m.add_argument("--no-edge-norm", action="store_true", help="turn edge normalization off")
        m.add_argument("--unrolled", action="store_true", help="second-order architecture step")
        m.add_argument("--epochs", type=_positive(most=MAX_EPOCHS), default=None)
        m.add_argument("--dataset", choices=DATASETS, default=None)
        m.add_argument("--retrain", action="store_true",
                       help="after the search, retrain the found cell with the pc-darts "
                            "table's protocol and place it among the table's random cells")
    spos = methods.add_parser("spos", parents=[common], help="single-path one-shot search")
    spos.add_argument("--preset", choices=list(PRESETS), default=None)
    spos.add_argument("--flops-limit", type=_positive(float), default=None, metavar="M",
                      help="FLOPs budget in millions of multiply-adds")
    spos.add_argument("--params-limit", type=_positive(float), default=None, metavar="M",
                      help="parameter budget in millions")
    spos.add_argument("--population", type=_positive(most=MAX_POPULATION), default=None)
    spos.add_argument("--generations", type=_positive(most=MAX_GENERATIONS),
                      default=None)
    spos.add_argument("--sampling", choices=("window", "bins", "uniform"), default=None,
                      help="supernet paths: inside the FLOPs window around the budget "
                           "(default, as the official code trains), FLOPs bins over the "
                           "whole space, or any path uniformly")
    spos.add_argument("--space", choices=("blocks", "channels"), default=None,
                      help="choose a block per layer (default), or a block and a channel "
                           "scale 0.2-2.0 (paper Sec. 3.3)")
    pnas = methods.add_parser("pnas", parents=[common], help="progressive cell search")
    pnas.add_argument("--preset", choices=list(PRESETS), default=None)
    pnas.add_argument("--blocks", type=_positive(most=MAX_BLOCKS), default=None,
                      help="blocks per cell B")
    pnas.add_argument("--beam", type=_positive(most=MAX_BEAM), default=None,
                      help="children kept per level K")
    pnas.add_argument("--predictor", choices=("lstm", "mlp-ensemble"), default=None)
    pnas.add_argument("--oracle", choices=("train", "table"), default=None,
                      help="train each child, or read its accuracy from the ground-truth table")

    table = sub.add_parser("table", parents=[debug],
                           help="train a ground-truth table: pnas, spos or pc-darts")
    table.add_argument("table_method", metavar="METHOD", choices=("pnas", "spos", "pc-darts"),
                       help="pnas, spos or pc-darts")
    table.add_argument("--preset", choices=list(PRESETS), default="quick")
    table.add_argument("--device", type=_device, default="cpu",
                       help="cpu (the shipped tables), auto, cuda or cuda:N")
    table.add_argument("--seeds", type=_positive(), default=None,
                       help="seeds per architecture (new table: 2; with --resume, more than "
                            "the file holds extends it)")
    table.add_argument("--out", default=None, help="table file (default data/tables/METHOD-PRESET.json)")
    table.add_argument("--resume", action="store_true", help="continue the file --out names")
    table.add_argument("--threads", type=_positive(), default=None,
                       help="CPU threads for the table (default: the global --threads, 1)")
    table.add_argument("--limit", type=_positive(), default=None, metavar="N",
                       help="train only the first N architectures (try the protocol)")
    table.add_argument("--parallel", action="store_true",
                       help="train a row's seeds at once, a thread each (pnas; same results)")
    table.add_argument("--workers", type=_positive(), default=1, metavar="N",
                       help="train N rows at once in N processes, one thread each (same results)")
    table.add_argument("--space", choices=("blocks", "channels"), default="blocks",
                       help="spos: the block space, or blocks and channel scales (its own "
                            "table, METHOD-PRESET-channels.json)")
    handouts = sub.add_parser("handouts", parents=[debug],
                              help="every notebook as self-contained HTML, checked in Chromium")
    handouts.add_argument("notebooks", nargs="?", default="notebooks")
    handouts.add_argument("--out", default="handouts")
    handouts.add_argument("--no-check", action="store_true", help="export only, no Chromium")
    student = sub.add_parser("student", parents=[debug],
                             help="learners' copies: exercise solutions replaced by stubs")
    student.add_argument("notebooks", nargs="?", default="notebooks")
    student.add_argument("out", nargs="?", default="student")
    return p


def _handouts(args) -> int:
    return 1 if write_handouts(args.notebooks, args.out, check=not args.no_check) else 0


def _student(args) -> int:
    for path in make_student_copies(args.notebooks, args.out):
        print(f"student copy: {path}")
    return 0


def _gb(n: float) -> str:
    """Bytes for a reader: TB, GB or MB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n / 1e6:,.1f} MB"


def _machine_memory() -> int | None:
    """Physical memory in bytes, None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_size(genotype, args) -> None:
    """Refuse a network that cannot fit in this machine's memory, before it is built for real.

    The network is built on PyTorch's ``meta`` device (shapes only, no memory) and run once:
    its parameters (4 bytes each) and its largest feature map for one image must both be in
    memory at once, a lower bound on what ``info`` would allocate."""
    with torch.device("meta"):
        model = NetworkCIFAR(genotype, args.channels, args.num_classes, args.layers,
                             auxiliary=args.auxiliary).eval()
    params = sum(p.numel() for p in model.parameters())
    largest = [3 * args.image_size ** 2]

    def record(module, inputs, output):
        largest[0] = max(largest[0], output.numel())

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.zeros(1, 3, args.image_size, args.image_size, device="meta"))
    for h in hooks:
        h.remove()
    need, have = 4 * (params + largest[0]), _machine_memory()
    if have is not None and need > have:
        raise CLIError(f"this network needs at least {_gb(need)} of memory ({params:,} "
                       f"parameters and a feature map of {largest[0]:,} values for one image, "
                       f"4 bytes each); this machine has {_gb(have)}: lower --channels, "
                       f"--layers, --num-classes or --image-size")


def _info(args) -> int:
    genotype = resolve(args.genotype)
    if args.channels % 2:
        raise CLIError(f"--channels must be even (factorized reduce halves it), got {args.channels}")
    _check_size(genotype, args)
    model = NetworkCIFAR(genotype, args.channels, args.num_classes, args.layers,
                         auxiliary=args.auxiliary)
    params = count_params(model)
    params_aux = count_params(model, include_auxiliary=True)
    flops = count_flops(model, (3, args.image_size, args.image_size))
    if args.json:
        print(json.dumps({"params": params, "params_auxiliary": params_aux, "flops": flops}))
    else:
        print(f"genotype: {genotype}")
        if (genotype.reduce, genotype.reduce_concat) == (genotype.normal,
                                                         genotype.normal_concat):
            print("cells:    one cell for both roles (the reduction cell is the normal cell, "
                  "as in PNAS)")
        print(f"network:  C={args.channels}, {args.layers} cells, "
              f"{args.num_classes} classes, {args.image_size}x{args.image_size} input")
        print(f"params:   {params:,} ({params / 1e6:.2f}M)"
              + (f"; with auxiliary head {params_aux:,}" if args.auxiliary else ""))
        print(f"FLOPs:    {flops:,} multiply-adds ({flops / 1e6:.0f}M)")
    return 0


def _train(args) -> int:
    genotype = resolve(args.genotype)
    preset = get_preset(args.preset, args.device)  # --device cpu: quick unless named
    out = check_new(args.out or f"runs/train-{preset.name}-seed{args.seed}", "train",
                    args.overwrite, empty=True)

    distributed.check_batch(preset.train.batch_size)
    distributed.barrier()  # every rank has checked the folder before rank 0 claims it
    # one run per folder; a folder the claim made is removed again if training fails
    with claim(out) if distributed.is_main() else contextlib.nullcontext():
        model, history = train_genotype(genotype, preset, epochs=args.epochs, seed=args.seed,
                                        device=args.device)
        if not distributed.is_main():  # rank 0 writes and prints
            return 0
        if args.overwrite:
            clear(out)
        write_json(out / "genotype.json", genotype.to_dict())  # atomic, like every run file
        write_json(out / "history.json", history.to_dict())
        svg = save_svg(draw_genotype(genotype), out / "cell.svg")
        html = save_html(plot_history(history, f"{args.genotype} on {preset.dataset}"),
                         out / "curves.html")
    print(f"genotype: {genotype}")
    print(f"test accuracy after {len(history.epoch)} epochs: {history.valid_acc[-1]:.4f}")
    print(f"drawing: {svg or 'skipped (no dot)'}")
    print(f"curves:  {html}")
    return 0


def _search(args) -> int:
    # the preset follows the chosen device (--device cpu: quick) unless named; a resumed
    # run keeps its own
    preset = args.preset or (None if args.resume else preset_name(None, args.device))
    common = dict(preset=preset, seed=args.seed, out=args.out, resume=args.resume,
                  overwrite=args.overwrite, device=args.device)
    if args.method in ("pc-darts", "darts"):
        result = searches.search_pc_darts(method=args.method, k=args.k,
                                          edge_norm=False if args.no_edge_norm else None,
                                          unrolled=args.unrolled, epochs=args.epochs,
                                          dataset=args.dataset, retrain=args.retrain, **common)
    elif args.method == "spos":
        result = searches.search_spos(flops_limit=args.flops_limit,
                                      params_limit=args.params_limit,
                                      population=args.population,
                                      generations=args.generations, sampling=args.sampling,
                                      space=args.space, **common)
    else:
        result = searches.search_pnas(blocks=args.blocks, beam=args.beam,
                                      predictor=args.predictor, oracle=args.oracle, **common)
    if not distributed.is_main():  # rank 0 prints
        return 0
    print(f"found:    {result['result']}")
    for label, path in result.get("files", {}).items():
        print(f"{label + ':':<10}{path if path is not None else 'skipped (no dot)'}")
    print(f"run dir:  {result['run_dir']}")
    if "sentence" in result:
        print(result["sentence"])
    return 0


def _table(args) -> int:
    result = cli_table(args.table_method, args.preset, args.seeds, args.out, args.resume,
                       args.threads, args.limit, args.parallel, device=args.device,
                       workers=args.workers, space=args.space)
    table, s = result["table"], result["table"].stats()
    print(f"table:    {result['path']}")
    print(f"rows:     {s['rows']} x {s['seeds']} seeds, {table.header['wall_s']:.0f} s "
          f"on {table.header['device']}")
    if "seeds_planned" in table.header:
        n = table.header["seeds_planned"]
        print(f"extending: {len(table.complete(n))} of {len(table)} rows have {n} seeds; "
              f"continue with --resume")
    print(f"noise:    seed SD {s['seed_sd']:.4f}; spread across architectures {s['arch_sd']:.4f}")
    print(f"ranking:  seed-vs-seed Spearman {s['seed_spearman']:.3f}"
          + (f"; split-half {s['split_half']:.3f} (reliability of the mean "
             f"{s['reliability']:.3f})" if "split_half" in s else ""))
    return 0


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _expected(e: BaseException) -> str | None:
    """The one-line message of an expected failure, None for anything else (a bug)."""
    oom = isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))  # torch's CPU OOM
    if oom:
        asked = re.search(r"allocate (\d+) bytes", str(e))
        what = f"asked for {_gb(int(asked.group(1)))} at once" if asked else _one_line(e)[:200]
        return (f"out of memory: {what}; try the quick preset, smaller sizes, or another "
                f"--device")
    # Every library check raises ValueError (GenotypeError, RunFolderError, config checks) or
    # one of these; an unexpected ValueError still shows its traceback with --debug.
    if isinstance(e, (CLIError, GenotypeError, DatasetUnavailable, TableError, Diverged,
                      ValueError, FileNotFoundError)):
        return _one_line(e)
    return None


def _join(args) -> bool:
    """Under torchrun: refuse a verb that runs in one process, else join the process group
    and run on this rank's device (``cuda:LOCAL_RANK`` on a GPU machine). True when it
    joined one (left again at the end of :func:`main`)."""
    if not distributed.launched() or distributed.active():
        return False
    if args.command not in ("train", "search"):
        raise CLIError(f"'{args.command}' runs in one process; start it without torchrun "
                       f"(train and search run under torchrun)")
    args.device = str(distributed.init(args.device))
    return True


def _resume_hint(args, run_dir) -> str:
    """What the line after Ctrl-C tells: the command that continues the interrupted work."""
    if args.command == "table":
        out = f" --out {args.out}" if args.out else ""
        space = f" --space {args.space}" if args.space != "blocks" else ""
        return (f"; continue the table with `{PROG} table {args.table_method}{space}{out} "
                f"--resume`")
    if args.command != "search":
        return ""
    if run_dir is None:
        return "; a search continues with --resume RUN_FOLDER once it has written a checkpoint"
    if holds(run_dir) is None:
        return f"; {run_dir} holds no checkpoint yet, so start the search again"
    return f"; continue it with `{PROG} search {args.method} --resume {run_dir}`"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with one line on bad flags
    handlers = {"info": _info, "train": _train, "search": _search, "table": _table,
                "handouts": _handouts, "student": _student}
    joined = False
    try:
        # the search's own --threads, else the global one; restored after, so a caller in
        # the same process (a notebook, a test) keeps its own
        with threads(getattr(args, "search_threads", None) or args.cpu_threads):
            joined = _join(args)
            return handlers[args.command](args)
    except KeyboardInterrupt as e:
        print(f"{PROG}: interrupted{_resume_hint(args, getattr(e, 'run_dir', None))}",
              file=sys.stderr)
        return 130
    except RunFinished as e:  # nothing to do, and nothing was changed: not an error
        print(f"{PROG}: {e}")
        return 0
    except Exception as e:
        message = _expected(e)
        if message is None:
            raise  # a bug: its traceback must stay visible
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if joined:
            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
