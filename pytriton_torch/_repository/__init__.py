"""Repository mode: serve a Triton model repository of PyTorch models from this process.

Each model folder (``config.pbtxt`` + version folders) becomes a bound model: its torch module is
loaded here once per device (shared by the instances on it), and Triton runs our Python-backend
proxy with the user's config (batching, priorities, ...) kept. ``model_warmup`` samples run
here, before Triton is asked to load the model; Triton never gets them.

- ``_config``: parse and check ``config.pbtxt``, version folders, safe file paths
- ``_params``: the upstream parameters (boolean parsing, torch settings per execution)
- ``_conventions``: input/output naming conventions and datatype checks
- ``_loaders``: TorchScript, model.py + weights, ``.pt2`` (export / AOTInductor)
- ``_runner``: the per-instance infer callable (gather, run, scatter)
- ``_samples``: ``model_warmup`` entries and their ``warmup/`` data files
- ``_bound``: the rewritten config and versioned proxy shims
- ``_loader``: orchestration; ``_report``: :class:`RepositoryReport`

Only ``_report`` is imported here: the rest imports torch, which the proxy inside Triton's stub
must not pay for.
"""

from ._report import RepositoryReport

__all__ = ["RepositoryReport"]
