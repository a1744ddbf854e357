"""nas-tutorial: neural architecture search you can run, read and change.

``import nas_tutorial as nt`` gives the shared core: the op registry, genotypes, the
evaluation network, data on the device (``nt.devices``: where a run computes and what made
a recorded number), the training loop and presets. The methods live in
their own modules (``nt.pc_darts``, ``nt.spos``, ``nt.pnas``); drawings and plots in
``nt.viz``. Importing does nothing else: no downloads, no device moves, no seeding.
"""
from . import data, devices
from .config import PRESETS, Preset, TrainConfig, get_preset, notebook_preset
from .flops import count_flops
from .genotypes import GENOTYPES, Genotype, GenotypeError
from .network import NetworkCIFAR, count_params
from .ops import DARTS_OPS, OPS, PNAS_OPS
from .training import History, evaluate, train, train_genotype

__version__ = "0.1.0"

__all__ = [
    "data", "devices", "PRESETS", "Preset", "TrainConfig", "get_preset", "notebook_preset",
    "count_flops", "GENOTYPES",
    "Genotype", "GenotypeError", "NetworkCIFAR", "count_params", "DARTS_OPS", "OPS",
    "PNAS_OPS", "History", "evaluate", "train", "train_genotype",
]


# Old names of moved modules: nt.spos_viz and `from nas_tutorial import spos_viz` still work.
_ALIASES = {"pc_darts": "methods.pc_darts", "spos": "methods.spos", "pnas": "methods.pnas",
            "spos_space": "methods.spos_space", "pnas_space": "methods.pnas_space",
            "spos_viz": "viz.spos", "pnas_viz": "viz.pnas", "cli": "run.cli",
            "runs": "run.records", "tables": "run.tables", "runfolders": "run.folders",
            "searches": "run.searches", "compare": "run.compare", "notebook": "viz.notebook",
            "handouts": "teaching.handouts", "exercises": "teaching.exercises",
            "gpu_budget": "run.gpu_budget"}


def __getattr__(name):
    # Method modules and viz load on first use, so `import nas_tutorial` stays light and
    # plotly/graphviz stay out of the training path.
    import importlib

    if name in _ALIASES:
        return importlib.import_module(f".{_ALIASES[name]}", __name__)
    if name in ("viz", "methods", "run", "checkpoints", "groundtruth",
                "distributed", "fast", "teaching", "progress", "devices"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nas_tutorial' has no attribute '{name}'")
