"""The result of loading a model repository (no torch import: the package's top level uses it)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RepositoryReport:
    """What :meth:`Triton.load_repository` did: models serving, and models that failed with why.

    Before the server starts, a model whose load Triton refuses at start moves from ``loaded``
    to ``failed`` then.

    Example::

        report = triton.load_repository("model_repository")
        for name, reason in report.failed.items():
            print(f"{name}: {reason}")
    """

    loaded: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
