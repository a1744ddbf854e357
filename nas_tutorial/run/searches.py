"""``nas-tutorial search METHOD``: flags -> config -> ``method.search()`` -> one writer.

Each method module holds its algorithm and nothing else; this module does the rest, the
same way for every method:

- **one config rule**: :func:`get_config` (``method, preset, **overrides``): the preset's
  config (the preset follows the device: ``quick`` on a CPU, ``full`` on CUDA), every
  override that is not None replaces a field, an unknown field is refused in one line;
- **one check before any work**: the run folder (:mod:`.folders`), and for ``--resume``
  the checkpoint, read once (:func:`nas_tutorial.checkpoints.read_checkpoint`), its method,
  its preset and every flag given beside it;
- **one writer** (:class:`RunWriter`): every file of a run folder is written atomically,
  the search's own files first, so an interrupted drawing loses nothing;
- **one summary layout**: every ``summary.json`` has the keys :data:`SUMMARY_KEYS`, the
  method's own figures under ``results``.

Under torchrun every process runs the search; rank 0 alone writes and prints.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .. import distributed, viz

from ..methods import pc_darts, pnas, spos
from ..checkpoints import write_json
from ..config import PRESETS, TrainConfig, preset_name
from ..devices import device_label, machine, resolve_device
from ..groundtruth import TableError
from ..viz import pnas as pnas_viz
from ..viz import spos as spos_viz
from . import folders as rf
from . import compare, records, tables

# The top-level keys of every summary.json, whatever the method.
SUMMARY_KEYS = ("method", "preset", "seed", "device", "torch", "machine", "processes",
                "created", "wall_s", "config", "results")


# -- one config rule ---------------------------------------------------------------------------
def get_config(method: str, preset: str | None = None, given=(), **overrides):
    """The config of ``method`` (pc-darts, darts, spos, pnas) for ``preset``, with the
    overrides of the flags given: a None is a flag left out and dropped, except for the
    fields named in ``given`` (set on purpose, e.g. ``image_size=None``: native size). Each
    method's own ``get_config`` then applies :func:`nas_tutorial.config.select`."""
    overrides = {k: v for k, v in overrides.items() if v is not None or k in given}
    if method in ("pc-darts", "darts"):
        return pc_darts.get_config(method, preset, **overrides)
    if method == "spos":
        return spos.get_config(preset, **overrides)
    if method == "pnas":
        return pnas.get_config(preset, **overrides)
    raise ValueError(f"unknown method '{method}'; choose pc-darts, darts, spos or pnas")


# -- one writer and one summary layout ---------------------------------------------------------
def summary(method: str, preset, seed: int, device, wall_s: float, config: dict,
            results: dict) -> dict:
    """A ``summary.json``: who ran what where (:data:`SUMMARY_KEYS`), the method's own
    figures under ``results``. ``machine`` is :func:`nas_tutorial.devices.machine`: a
    recorded number is compared bit for bit only on the machine that made it."""
    return {"method": method, "preset": preset, "seed": seed, "device": device_label(device),
            "torch": torch.__version__, "machine": machine(device),
            "processes": distributed.world_size(), "created": time.strftime("%Y-%m-%d"),
            "wall_s": round(float(wall_s), 2), "config": config, "results": results}


class RunWriter:
    """Writes a run folder: JSON, drawings (SVG) and figures (HTML), each atomically;
    :attr:`files` maps a label to the path written (None for a drawing skipped because
    graphviz's ``dot`` is missing), for the CLI to print."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.files = {}

    def json(self, label: str, name: str, obj, strict: bool = True) -> Path:
        self.files[label] = write_json(self.folder / name, obj, strict=strict)
        return self.files[label]

    def svg(self, label: str, name: str, graph):
        self.files[label] = viz.save_svg(graph, self.folder / name)
        return self.files[label]

    def html(self, label: str, name: str, fig) -> Path:
        self.files[label] = viz.save_html(fig, self.folder / name)
        return self.files[label]

    def summary(self, *args, **kwargs) -> dict:
        s = summary(*args, **kwargs)
        self.json("summary", "summary.json", s)
        return s


def _folder(method, out, resume, overwrite, default):
    """The run folder, checked (a new one, or ``--resume``'s) and the
    checkpoint a resume reads (once; None for a new run)."""
    if resume is not None:
        run_dir = rf.check_resume(resume, method, out, overwrite)
        return run_dir, rf.read_checkpoint(run_dir, method)
    return rf.check_new(out or default, method, overwrite), None


_CLAIMS = []  # the run folders this process holds, released when its search returns


def _start(run_dir, resume, overwrite) -> None:
    """After every check: every rank has checked the folder before rank 0 claims it
    (:func:`~nas_tutorial.run.folders.claim`: one run per folder) and changes it."""
    distributed.barrier()
    if distributed.is_main():
        _CLAIMS.append(rf.claim(run_dir, flag="--out" if resume is None else "--resume"))
        if resume is None and overwrite:
            rf.clear(run_dir)


def _releases(search):
    """A search releases the folders it claimed however it ends (done, error, Ctrl-C)."""
    @functools.wraps(search)
    def run(*args, **kwargs):
        held = len(_CLAIMS)
        try:
            return search(*args, **kwargs)
        except KeyboardInterrupt as e:  # the CLI names the folder to resume
            if len(_CLAIMS) > held:
                e.run_dir = _CLAIMS[-1].target
            raise
        finally:
            while len(_CLAIMS) > held:
                _CLAIMS.pop().release()
    return run


# -- PC-DARTS / DARTS --------------------------------------------------------------------------
def table_preset(config, preset: str | None = None) -> str:
    """The preset whose ``pc-darts`` table a search's cell is placed in: the data preset of
    ``preset`` when given; for a resumed run (no preset on the command line) the preset
    whose search data and cell shape the saved config has."""
    if preset is not None:
        return pc_darts.data_preset(preset)
    for name in ("quick", "full"):
        base = pc_darts.PRESETS[name]
        if (base.dataset, base.image_size, base.steps, base.multiplier) == (
                config.dataset, config.image_size, config.steps, config.multiplier):
            return name
    return preset_name(None)


def check_retrain(config, preset: str | None):
    """The table a ``--retrain`` will place the found cell in, checked before the search
    starts: a missing table, a table made with another protocol than the code's, or a
    search on other data or another cell shape fails in one line, not after minutes."""
    name = table_preset(config, preset)
    table = tables.load("pc-darts", name)  # FileNotFoundError names the command to make it
    protocol = table.header.get("protocol", {})
    if config.dataset != protocol.get("dataset") or config.steps != protocol.get("search_steps") \
            or config.multiplier != protocol.get("search_multiplier"):
        raise TableError(
            f"--retrain places the cell in the {name} pc-darts table, made for "
            f"{protocol.get('dataset')} cells of {protocol.get('search_steps')} nodes; this "
            f"search has {config.dataset} cells of {config.steps} nodes, so its cell cannot be "
            f"placed there (search without --retrain, or on the table's data)")
    tables.check_protocol(table, tables.spec("pc-darts", name, "cpu"))
    return table, name


def retrain_sentence(results: dict) -> str:
    """The one line a learner reads at the end of ``search ... --retrain``."""
    return (f"found cell: {results['retrain_accuracy']:.3f} test accuracy after retraining, "
            f"better than {results['reference_percentile']:.0f}% of random cells' trainings "
            f"(their median {results['random_median']:.3f})")


def pc_darts_results(result) -> dict:
    """PC-DARTS's figures in ``summary.json``: k, edge_norm, the genotype, its
    parameter-free ops (normal and reduction cell), the skip_connects of the normal cell at
    every epoch (the collapse monitor) and the architecture half's accuracy."""
    cfg, h, g = result.config, result.history, result.genotype
    return {"k": cfg.k, "edge_norm": cfg.edge_norm, "unrolled": cfg.unrolled,
            "genotype": g.to_dict(),
            "param_free_normal": pc_darts.param_free_count(g, "normal"),
            "param_free_reduce": pc_darts.param_free_count(g, "reduce"),
            "normal_pairs": len(g.normal),
            "skips_per_epoch": [sum(op == "skip_connect" for op, _ in x.normal)
                                for x in h.genotypes()],
            "param_free_per_epoch": [pc_darts.param_free_count(x) for x in h.genotypes()],
            "search_valid_acc": h.valid_acc[-1] if h.valid_acc else None}


@_releases
def search_pc_darts(method="pc-darts", preset=None, k=None, edge_norm=None, unrolled=False,
                    epochs=None, dataset=None, seed=None, out=None, resume=None,
                    retrain=False, overwrite=False, device="auto") -> dict:
    """``nas-tutorial search pc-darts|darts``: run, then write the genotype, the history,
    ``summary.json``, the cell drawings (SVG) and the alpha/beta figures (HTML) into the
    run folder. ``retrain=True`` then trains the found cell from scratch with the
    ``pc-darts`` table's protocol and places it among the table's random cells
    (``retrain_accuracy``, ``reference_percentile`` in the summary's results)."""
    if preset is None and resume is None:  # the preset follows the device (cpu: quick)
        preset = preset_name(None, device)
    if resume is not None:
        run_dir, state = _folder(method, out, resume, overwrite, None)
        config = pc_darts.config_of(state, run_dir / "checkpoint.pt")
        if config.method != method:
            raise rf.RunFolderError(f"{run_dir} holds a {config.method} run, not a {method} "
                                    f"one; resume it with `nas-tutorial search "
                                    f"{config.method} --resume {run_dir}`")
        saved = asdict(config)
        # the fields the flags set; a preset decides every other one
        flag_fields = {"seed", "k", "edge_norm", "unrolled", "epochs", "warmup_epochs",
                       "dataset", "image_size"}
        presets = {n: asdict(get_config(method, n)) for n in (*PRESETS, "long")}
        rf.check_preset(run_dir, preset, saved, presets, flag_fields)
        preset = preset or rf.preset_of(saved, presets, flag_fields)  # the summary names it
        rf.check_flags(run_dir, saved, [
            ("--seed", "seed", seed), ("--k", "k", k), ("--no-edge-norm", "edge_norm", edge_norm),
            ("--unrolled", "unrolled", True if unrolled else None), ("--epochs", "epochs", epochs),
            ("--dataset", "dataset", dataset)])
        # a finished run is resumed only to add a retraining its summary does not hold
        rf.check_unfinished(run_dir, adds=("retrain_accuracy",) if retrain else ())
    else:
        overrides = {"seed": 0 if seed is None else seed, "k": k, "edge_norm": edge_norm,
                     "unrolled": True if unrolled else None, "epochs": epochs}
        if epochs is not None:
            overrides["warmup_epochs"] = min(get_config(method, preset).warmup_epochs,
                                             epochs // 2)
        if dataset is not None:
            small = dataset == "digits" or (dataset == "fashion_mnist"
                                            and pc_darts.data_preset(preset) == "quick")
            overrides.update(dataset=dataset, image_size=16 if small else None)
        config = get_config(method, preset, given=("image_size",), **overrides)
        run_dir, state = _folder(method, out, None, overwrite,
                                 f"runs/{method}-{preset}-seed{config.seed}")
    device = resolve_device(device)
    if retrain:
        # The table was trained on a CPU: the found cell is retrained there too, so that it
        # is placed among trainings with the same numerics (no bf16 autocast).
        table, table_name = check_retrain(config, preset)
        retrain_device = torch.device(table.device_type)
    _start(run_dir, resume, overwrite)
    result = pc_darts.search(config, out=run_dir, resume=state, device=device)
    h, g = result.history, result.genotype
    if not distributed.is_main():  # rank 0 writes the files and retrains; the others are done
        return {"run_dir": run_dir, "result": str(g), "files": {}, "summary": {}}
    # The search's files first: an interrupted or refused retraining loses none of them.
    w = RunWriter(run_dir)
    w.files.update(genotype=run_dir / "genotype.json", history=run_dir / "history.json")
    results = pc_darts_results(result)
    s = w.summary(method, preset, config.seed, device, sum(h.seconds), asdict(config), results)
    w.svg("normal", "normal.svg", viz.draw_cell(g, "normal"))
    w.svg("reduce", "reduce.svg", viz.draw_cell(g, "reduce"))
    w.html("alpha", "alpha_normal.html", viz.plot_alpha_evolution(h, "normal"))
    w.html("alpha_r", "alpha_reduce.html", viz.plot_alpha_evolution(h, "reduce"))
    w.html("heatmap", "alpha_heatmap.html", viz.plot_alpha_heatmap(h))
    w.html("skips", "skip_monitor.html", viz.plot_skip_monitor(h))
    done = {"run_dir": run_dir, "result": str(g), "files": w.files, "summary": s}
    if retrain:
        print(f"retraining the found cell with the {table_name} table's protocol "
              f"({retrain_device.type}) ...")
        with distributed.alone():  # rank 0 retrains by itself (the others have ended)
            placed = tables.retrain("pc-darts", g.to_dict(), config.seed, table_name,
                                    retrain_device, table=table, progress=True)
        budget = compare.equal_budget_draws(sum(h.seconds), placed["seconds"])
        results.update({"retrain_accuracy": placed["accuracy"],
                        "reference_percentile": placed["percentile"],
                        # among the random cells judged by their truth, the seed mean
                        "percentile_truth": table.percentile_of_means(placed["accuracy"]),
                        # the found cell is not in the table: its truth is this retraining;
                        # random search with the same compute, judged by the seeds that
                        # did not pick its cell
                        "best_truth": placed["accuracy"],
                        "random_best_truth": compare.random_search(
                            table, budget, report="others")["mean"],
                        "random_budget": budget,
                        "random_median": placed["random_median"],
                        "retrain_s": placed["seconds"], "retrain_device": retrain_device.type})
        w.json("summary", "summary.json", s)
        done["sentence"] = retrain_sentence(results)
    return done


# -- SPOS --------------------------------------------------------------------------------------
# The fields the flags of ``search spos`` set; the preset decides every other one.
SPOS_FLAGS = ("seed", "flops_limit", "params_limit", "population", "generations", "sampling",
              "space")


def spos_config(saved: dict, where) -> spos.SPOSConfig:
    """An :class:`~nas_tutorial.spos.SPOSConfig` from its ``asdict`` form (a checkpoint's)."""
    try:
        d = dict(saved)
        net = {k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("supernet").items()}
        return spos.SPOSConfig(supernet=spos.SupernetConfig(**net), **d)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise rf.RunFolderError(f"{where} holds settings this version cannot use ({e}); "
                                f"start a new run with --out") from None


def spos_truth(table, path):
    """A path's stand-alone accuracy averaged over the table's seeds, None where the table
    does not hold it (or there is no table)."""
    key = spos.path_key(path)
    return table.accuracy(key) if table is not None and key in table else None


@_releases
def search_spos(preset=None, flops_limit=None, params_limit=None, population=None,
                generations=None, sampling=None, seed=None, out=None, resume=None,
                device="auto", progress=True, overwrite=False, space=None) -> dict:
    """Train the supernet, run evolution and an equal-budget random search, measure ranking
    quality against the ``spos`` table when one matches, and write the best path, every
    evaluated path, ``summary.json`` and the figures into the run folder."""
    if preset is None and resume is None:  # the preset follows the device (cpu: quick)
        preset = preset_name(None, device)
    given = dict(flops_limit=flops_limit, params_limit=params_limit, population=population,
                 generations=generations, sampling=sampling, seed=seed, space=space)
    if resume is not None:
        run_dir, state = _folder("spos", out, resume, overwrite, None)
        cfg = spos_config(state["config"], run_dir / "supernet.pt")
        saved = asdict(cfg)
        rf.check_preset(run_dir, preset, saved,
                        {n: asdict(spos.get_config(n, space=cfg.space)) for n in PRESETS},
                        SPOS_FLAGS)
        rf.check_flags(run_dir, saved, [("--" + k.replace("_", "-"), k, v)
                                        for k, v in given.items()])
        rf.check_unfinished(run_dir)
    else:
        cfg = get_config("spos", preset, **{"seed": 0, **given})
    spos.check_budget(cfg.supernet, cfg.flops_limit, cfg.params_limit)  # before any training
    if resume is None:
        run_dir, _ = _folder("spos", out, None, overwrite, records.run_folder(cfg))
    distributed.check_batch(cfg.batch_size)
    _start(run_dir, resume, overwrite)
    main = distributed.is_main()
    device = resolve_device(device)
    t0 = time.perf_counter()
    train_ds, valid_ds = spos.load_data(cfg, device)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)  # once the data is there
    torch.manual_seed(cfg.seed)
    supernet = spos.Supernet(cfg.supernet)
    history = spos.train_supernet(supernet, train_ds, cfg, device, run_dir / "supernet.pt",
                                  progress=progress)
    if not main:  # the search after training runs on rank 0, which writes every file
        return {"run_dir": run_dir, "result": "", "files": {}}
    with distributed.alone():  # rank 0 alone: no collective waits for the others
        evaluator = spos.PathEvaluator(supernet, train_ds, valid_ds, cfg.recal_batches,
                                       cfg.recal_batch_size, amp=cfg.amp, seed=cfg.seed)
        evaluator.load_cache(run_dir / "fitness.json")
        table = tables.spos_table(cfg)
        rank = spos.ranking_from_table(evaluator, table) if table is not None else None
        evo, rnd = spos.search_pair(evaluator, cfg, cfg.seed, (run_dir / "evolution.json",
                                                               run_dir / "random.json"),
                                    progress)
        evaluator.save_cache(run_dir / "fitness.json")
    best = evo.best
    w = RunWriter(run_dir)
    w.json("best", "best_path.json",
           {"path": best["path"], "fitness": best["fitness"], "flops": best["flops"],
            "params": best["params"], "config": asdict(cfg)}, strict=False)
    w.json("evaluated", "evaluated.json",
           {"evolution": evo.evaluated, "random": rnd.evaluated,
            "supernet_history": history, "ranking": rank})
    results = {
        "space": cfg.space, "sampling": cfg.sampling, "supernet_epochs": cfg.epochs,
        "supernet_train_accuracy": history["train_acc"][-1],
        "kendall_tau": rank and rank["tau"], "kendall_p": rank and rank["p_value"],
        "kendall_tau_no_recal": rank and rank["tau_no_recal"],
        "kendall_p_no_recal": rank and rank["p_value_no_recal"],
        "paths_ranked": len(rank["paths"]) if rank else 0,
        "recal_improved_fraction": rank and rank["improved"],
        "evolution_best": best["fitness"], "evolution_best_path": best["path"],
        "random_best": rnd.best["fitness"], "evaluations": len(evo.evaluated),
        # what each picked, judged by the table's mean over seeds (None off the table)
        "best_truth": spos_truth(table, best["path"]),
        "random_best_truth": spos_truth(table, rnd.best["path"]),
        "random_evaluations": len(rnd.evaluated), "flops_limit": cfg.flops_limit}
    w.summary("spos", cfg.name, cfg.seed, device, time.perf_counter() - t0, asdict(cfg),
              results)
    w.html("pareto", "pareto.html", spos_viz.plot_pareto({"evolution": evo, "random": rnd},
                                                         cfg.flops_limit))
    w.html("progress", "progress.html", spos_viz.plot_search_progress(evo, rnd))
    w.svg("path", "path.svg", spos_viz.draw_path(best["path"], cfg.supernet))
    if rank is not None:
        w.html("ranking", "ranking.html", spos_viz.plot_ranking(rank))
    found = (f"{tuple(best['path'])} fitness {best['fitness']:.4f}, "
             f"{best['flops'] / 1e6:.3f}M FLOPs, {best['params'] / 1e6:.3f}M params"
             f" (random search: {rnd.best['fitness']:.4f})")
    if rank is not None:
        found += (f"; ranking vs the table: Kendall tau {rank['tau']:.2f} "
                  f"(without recalibration {rank['tau_no_recal']:.2f})")
    return {"run_dir": run_dir, "result": found, "files": w.files}


# -- PNAS --------------------------------------------------------------------------------------
# The fields the flags of ``search pnas`` set; the preset decides every other one.
PNAS_FLAGS = ("blocks", "beam", "predictor", "seed", "oracle")


def pnas_config(saved: dict, where) -> pnas.PNASConfig:
    """A :class:`~nas_tutorial.pnas.PNASConfig` from the dict a checkpoint saves."""
    try:
        d = {"oracle": "train", **saved}  # checkpoints from before the oracle
        return pnas.PNASConfig(**{**d, "ops": tuple(d["ops"]),
                                  "train": TrainConfig(**d["train"])})
    except (TypeError, ValueError, KeyError) as e:
        raise rf.RunFolderError(f"{where} holds settings this version cannot use ({e}); "
                                f"start a new run with --out") from None


@_releases
def search_pnas(preset=None, blocks=None, beam=None, predictor=None, seed=None, out=None,
                resume=None, oracle=None, overwrite=False, device="auto") -> dict:
    """``nas-tutorial search pnas``: run, then write the best cell, all evaluated cells,
    ``summary.json`` and the figures into the run folder."""
    if preset is None and resume is None:  # the preset follows the device (cpu: quick)
        preset = preset_name(None, device)
    if resume is not None:
        run_dir, state = _folder("pnas", out, resume, overwrite, None)
        config = pnas_config(state["config"], run_dir / "checkpoint.json")
        saved = pnas.config_dict(config)
        presets = {n: pnas.config_dict(pnas.get_config(n)) for n in PRESETS}
        rf.check_preset(run_dir, preset, saved, presets, PNAS_FLAGS)
        preset = preset or rf.preset_of(saved, presets, PNAS_FLAGS)  # the summary names it
        rf.check_flags(run_dir, saved, [
            ("--blocks", "blocks", blocks), ("--beam", "beam", beam),
            ("--predictor", "predictor", predictor), ("--seed", "seed", seed),
            ("--oracle", "oracle", oracle)])
        rf.check_unfinished(run_dir)
    else:
        config = get_config("pnas", preset, blocks=blocks, beam=beam, predictor=predictor,
                            seed=seed, oracle=oracle)
    if config.oracle == "table":
        pnas.find_table(config)  # refuse at once, before a run folder exists
    if resume is None:
        suffix = "-table" if config.oracle == "table" else ""
        run_dir, state = _folder("pnas", out, None, overwrite,
                                 f"runs/pnas-{preset_name(preset)}{suffix}-seed{config.seed}")
    _start(run_dir, resume, overwrite)
    result = pnas.search(config, run_dir=run_dir, resume=state or False, device=device)
    best = result.best
    if not distributed.is_main():  # rank 0 writes the files
        return {"run_dir": run_dir, "result": best["key"], "files": {}}
    w = RunWriter(run_dir)
    w.json("best", "best_cell.json", result.best_genotype.to_dict(), strict=False)
    w.json("cells", "cells.json", result.to_dict(), strict=False)
    results = pnas.summary(result)
    w.summary("pnas", preset, config.seed, resolve_device(device),
              result.seconds, pnas.config_dict(config), results)
    w.html("scatter", "predictions.html", pnas_viz.plot_predictions(result))
    w.html("curve", "pnas_vs_random.html", pnas_viz.plot_efficiency(result))
    w.svg("beams", "beams.svg", pnas_viz.draw_beams(result))
    w.svg("drawing", "best_cell.svg", viz.draw_genotype(result.best_genotype, title="best cell"))
    rand = results["random_best_accuracy"]
    versus = f"; random search, same {results['models_trained']} models: {rand:.4f}" if rand else ""
    return {"run_dir": run_dir,
            "result": f"{best['key']} (validation accuracy {best['accuracy']:.4f}{versus})",
            "files": w.files}


SEARCHES = {"pc-darts": search_pc_darts, "darts": search_pc_darts, "spos": search_spos,
            "pnas": search_pnas}

__all__ = ["SUMMARY_KEYS", "get_config", "summary", "RunWriter", "search_pc_darts",
           "search_spos", "search_pnas", "SEARCHES", "check_retrain", "table_preset"]
