"""``prmtree export``: a run's labelled steps in the formats that PRM trainers read.

TRL removed its PRM trainer and the stepwise-supervision dataset type in September 2026
(huggingface/trl#7133), so the ``steps/`` table is no longer "what TRL reads". Each format
is one class in one module of this package, checked against the reading code of the
trainer it names (see each module): ``openrlhf``, ``visualprm``, ``qwen-prm``,
``math-shepherd``, ``hf`` (with its dataset card, ``card``), ``stepwise`` (alias ``trl``),
``prm800k``, ``pairs`` and ``jsonl``. A format registers itself in
:data:`prmtree.engine.registry.EXPORT_FORMATS`; adding one is a subclass of
:class:`ExportFormat` with ``@EXPORT_FORMATS.register(name)``.

Exports never write inside the run's directory, refuse an existing target unless
``overwrite=True``, and fail with :class:`ExportError` and one line saying why.
"""

from __future__ import annotations

from pathlib import Path

from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export import (
    hf,
    jsonl,
    math_shepherd,
    openrlhf,
    pairs,
    prm800k,
    qwen_prm,
    stepwise,
    visualprm,
)
from prmtree.export.base import PLACEHOLDER, ExportError, ExportFormat, ExportOptions

#: The built-in formats in the order ``prmtree export --help`` lists them; formats registered
#: elsewhere (a test, an entry point) follow in the registry's order.
BUILT_IN = (
    openrlhf.OpenRLHF, visualprm.VisualPRM, qwen_prm.QwenPRM, math_shepherd.MathShepherd, hf.HF,
    stepwise.Stepwise, prm800k.PRM800K, pairs.Pairs, jsonl.Jsonl,
)

__all__ = ["PLACEHOLDER", "ExportError", "ExportFormat", "ExportOptions", "export", "format_list", "formats"]


def formats() -> list[type[ExportFormat]]:
    """Every known format class: the built-ins, then the others registered."""
    found = list(BUILT_IN)
    for name in EXPORT_FORMATS.names():
        cls = EXPORT_FORMATS.find(name)
        if cls is not None and cls not in found:
            found.append(cls)
    return found


def format_list() -> list[tuple[str, str]]:
    """``(name, description)`` of every format and alias, in ``--help`` order."""
    return [item for cls in formats() for item in [(cls.name, cls.description), *cls.aliases.items()]]


def export(out: str | Path, fmt: str, target: str | Path, options: ExportOptions | None = None) -> int:
    """Write the run in ``out`` as ``fmt`` to ``target``; returns the number of records written."""
    out, target = Path(out), Path(target)
    options = options or ExportOptions()
    known = formats()
    form = next((cls() for cls in known if fmt == cls.name or fmt in cls.aliases), None)
    if form is None:
        raise ExportError(f"format must be one of {', '.join(name for name, _ in format_list())}, got {fmt!r}")
    if options.soft and not form.soft_labels:
        soft = " and ".join(sorted(cls.name for cls in known if cls.soft_labels))
        carrying = [cls.name for cls in known if cls.values_column]
        where = (f" (the {' and '.join(carrying)} exports always carry the MC values in `values`)"
                 if form.values_column else "")
        raise ExportError(f"soft labels go to {soft} only, not {form.name}{where}")
    for option in options.given():
        if option not in form.options:
            readers = " and ".join(cls.name for cls in known if option in cls.options)
            raise ExportError(f"{option} applies to {readers} only, not {form.name}")
    if not out.is_dir() or not (any(out.glob("manifest*.json")) or (out / "steps").is_dir()):
        raise ExportError(f"{str(out)!r} holds no prmtree manifest")
    _check_outside(out, target)
    form.check_target(target, options.overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    return form.write(out, target, options)


def _check_outside(out: Path, target: Path) -> None:
    """An export never writes inside the run, nor over a folder that holds it."""
    run, dest = out.resolve(), target.resolve()
    if dest == run or run in dest.parents:
        raise ExportError(f"{str(target)!r} is inside the run directory {str(out)!r}; export somewhere else")
    if dest in run.parents:
        raise ExportError(f"{str(target)!r} contains the run directory {str(out)!r}; export somewhere else")
