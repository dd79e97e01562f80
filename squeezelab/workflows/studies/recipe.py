"""Study recipes: one YAML file in ``recipes/studies/`` describes a grid of ordinary runs, and
``expand_study`` turns it into cells, each a validated config of its kind.

Recipe layout (every key but ``study``, ``axes``' variants and ``budgets`` may be left out)::

    # header comment: what it reproduces, the command, the recorded result
    study: bypass                        # a name: the default output folder runs/studies/<name>/
    title: SqueezeNet with and without bypass
    source: {paper: "Iandola et al. 2016, SqueezeNet", arxiv: "1602.07360", where: "Table 3"}
    kind: train                          # what a cell is (registry.py); train: a train() run
    base: {model: squeezenet_cifar_e2, optimizer: adamw, lr: 0.002}   # the kind's settings
    axes:                                # in order; each a list of named variants
      bypass:
        - {name: vanilla, model_args: {bypass: none}}
        - {name: simple, model_args: {bypass: simple}}
    seeds: [0, 1, 2]                     # every combination of variants runs once per seed
    budgets:                             # settings per --budget, over base
      smoke: {epochs: 1, limit_train: 200, limit_test: 100}
      cpu: {epochs: 15, limit_train: 10000}
      full: {epochs: 30, seeds: [0, 1, 2]}   # a budget may also set seeds
    published:                           # the publication's numbers, shown beside ours
      metric: top1                       # defaults for the values below
      dataset: ImageNet
      source: "Iandola et al. 2016, Table 3"
      values:
        - {where: {bypass: vanilla}, percent: 57.5, model_size_mb: 4.8}
    report:                              # what the report draws (one mapping or a list)
      - {plot: table, rows: [variants.bypass], y: [metrics.test_top1, fp32_bytes],
         aggregate: seeds}

How a cell's settings are made: ``base``, then the budget's values over it, then each axis'
variant, then ``overrides`` (``squeezelab study --set``). Mappings merge key by key
(``model_args`` of a variant adds to the base's). A key set both by the budget and by an axis,
or by two axes of one cell, is an error: the grid would not say which one is meant. A variant's
own ``budgets`` (``{cpu: {epochs: 20}}``: any budgets, each optional) go over everything but
``--set``, and may override the study's budget for that variant alone (a slow learner that
needs more epochs than the rest of the grid at one budget). A variant's
``skip_axes`` leaves those axes out of its cells (SGDR *is* a schedule, so a scheduler axis does
not apply to it); a variant's ``kind`` gives its cells another kind than the study's.

A study whose cells are of several kinds (a ``train`` cell and the ``compress`` cells that start
from its model) gives the settings of one kind only under ``per_kind``, in ``base``, in a
budget or in a variant: ``per_kind: {train: {epochs: 1}, compress: {retrain_epochs: 1}}``.
Each layer's ``per_kind`` values for the cell's kind go right after that layer's own values::

    base:
      per_kind:
        train: {model: alexnet_cifar, epochs: 30}
        compress: {source: {cell: {step: fp32}}}
    budgets:
      smoke: {per_kind: {train: {epochs: 1, limit_train: 200}, compress: {...}}}

A cell starts from another cell's model through a **cell reference**: a top-level setting whose
value is ``{cell: NAME}`` (the other cell's name without its seed, ``dense``, or with it,
``dense-s0``) or ``{cell: {AXIS: VARIANT, ...}}`` (the cell whose variants are these on the axes
named and this cell's own on the others, or none where that cell skips an axis), at the cell's
own seed unless the reference says ``seed:``. The setting becomes that cell's run folder
(``<out>/runs/<name>``: a ``train`` cell's best checkpoint; ``model_cells.source_checkpoint``),
so ``source: {cell: dense}``, ``teacher: {cell: teacher}`` or a train cell's ``init_from:
{cell: dense}`` all read the other cell's model. A reference to a cell the plan does not have,
to the cell itself, or a circle of references is an error.

A cell is named by its variant names joined by ``-`` and its seed: ``vanilla-s0``. Cells are
ordered seed by seed (every variant at the first seed, then the next), so a study stopped half
way has the whole grid at one seed; a cell another one references comes before it (and only
that changes the order), so running the plan in order, or ``--list``'s commands one after the
other, runs every cell's sources first.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeezelab.config import ConfigBase, read_yaml_mapping
from squeezelab.workflows.studies.errors import StudyError, check, check_name
from squeezelab.workflows.studies.published import Published, SourceRef
from squeezelab.workflows.studies.registry import get_cell_kind, list_cell_kinds
from squeezelab.workflows.studies.report_spec import ReportSpec

BUDGETS = ("smoke", "cpu", "full")
#: keys of a variant that are not settings of the cell
VARIANT_KEYS = ("name", "skip_axes", "kind", "budgets")
#: the key of base, budget and variant values that holds settings of one kind only
PER_KIND = "per_kind"
#: the keys of a cell reference, ``{cell: NAME or {AXIS: VARIANT}, seed: N}``
REFERENCE_KEYS = ("cell", "seed")


@dataclass
class StudyConfig(ConfigBase):
    """A study recipe (see the module docstring): validated on construction."""

    study: str
    title: str = ""
    source: SourceRef | None = None
    kind: str = "train"
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: Published | None = None
    report: list[ReportSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_name(self.study, "study (the study's name)")
        check(self.kind in list_cell_kinds(),
              f"kind must be one of {', '.join(list_cell_kinds())}, got {self.kind!r}")
        check(isinstance(self.base, dict), f"base must be a mapping of the {self.kind} "
              f"settings, got {type(self.base).__name__}")
        _check_per_kind(self.base, "base")
        self._check_axes()
        self.seeds = check_seeds(self.seeds, "seeds")
        self._check_budgets()
        if self.published is not None:
            for i, value in enumerate(self.published.values):
                self._check_where(value.where, f"published: values[{i}]: where")
        if isinstance(self.report, dict):
            self.report = [self.report]
        check(isinstance(self.report, list), f"report must be a mapping or a list of them, "
              f"got {type(self.report).__name__}")
        self.report = [r if isinstance(r, ReportSpec)
                       else ReportSpec.from_dict(r, source=f"report[{i}]")
                       for i, r in enumerate(self.report)]
        for i, spec in enumerate(self.report):
            for axis, variants in spec.where.items():
                for variant in variants if isinstance(variants, list) else [variants]:
                    self._check_where({axis: variant}, f"report[{i}]: where")

    def _check_axes(self) -> None:
        check(isinstance(self.axes, dict), f"axes must be a mapping of axis name: list of "
              f"variants, got {type(self.axes).__name__}")
        for axis, variants in self.axes.items():
            check_name(axis, "an axis name")
            check(isinstance(variants, list) and bool(variants),
                  f"axis {axis!r} must be a non-empty list of variants")
            seen = set()
            for v in variants:
                check(isinstance(v, dict) and "name" in v,
                      f"every variant of axis {axis!r} needs a name, got {v!r}")
                check_name(v["name"], f"variant name in axis {axis!r}")
                check(v["name"] not in seen, f"axis {axis!r} has two variants named "
                      f"{v['name']!r}")
                seen.add(v["name"])
                skips = v.get("skip_axes", [])
                check(isinstance(skips, list), f"variant {v['name']!r}: skip_axes must be a "
                      f"list of axis names, got {skips!r}")
                for skipped in skips:
                    check(skipped in self.axes and skipped != axis,
                          f"variant {v['name']!r} skips axis {skipped!r}, which the study "
                          "does not have (or is its own)")
                if "kind" in v:
                    check(v["kind"] in list_cell_kinds(),
                          f"variant {v['name']!r}: kind must be one of "
                          f"{', '.join(list_cell_kinds())}, got {v['kind']!r}")
                _check_per_kind(v, f"axis {axis!r} variant {v['name']!r}")
                self._check_variant_budgets(v, f"axis {axis!r} variant {v['name']!r}")

    def _check_variant_budgets(self, variant: dict[str, Any], what: str) -> None:
        budgets = variant.get("budgets")
        if budgets is None:
            variant.pop("budgets", None)
            return
        check(isinstance(budgets, dict), f"{what}: budgets must be a mapping of budget: "
              f"settings, got {type(budgets).__name__}")
        unknown = sorted(set(budgets) - set(BUDGETS))
        check(not unknown, f"{what}: budgets: unknown budget(s) {unknown}; expected "
              f"{', '.join(BUDGETS)}")
        for name, values in budgets.items():
            check(isinstance(values, dict), f"{what}: budgets: {name} must be a mapping, "
                  f"got {type(values).__name__}")
            check("seeds" not in values, f"{what}: budgets: {name}: seeds are the study's "
                  "or its budget's, not one variant's")
            _check_per_kind(values, f"{what}: budgets: {name}")

    def _check_budgets(self) -> None:
        check(isinstance(self.budgets, dict), f"budgets must be a mapping of "
              f"{', '.join(BUDGETS)}, got {type(self.budgets).__name__}")
        unknown = sorted(set(self.budgets) - set(BUDGETS))
        check(not unknown, f"budgets: unknown budget(s) {unknown}; expected {', '.join(BUDGETS)}")
        missing = [b for b in BUDGETS if b not in self.budgets]
        check(not missing, f"budgets must give {', '.join(BUDGETS)}; missing: "
              f"{', '.join(missing)} (an empty mapping {{}} keeps the base settings)")
        for name in BUDGETS:
            values = self.budgets[name]
            if values is None:
                values = self.budgets[name] = {}
            check(isinstance(values, dict), f"budgets: {name} must be a mapping, got "
                  f"{type(values).__name__}")
            _check_per_kind(values, f"budgets: {name}")
            if "seeds" in values:
                values["seeds"] = check_seeds(values["seeds"], f"budgets: {name}: seeds")

    def _check_where(self, where: Mapping[str, str], what: str) -> None:
        for axis, variant in where.items():
            check(axis in self.axes, f"{what}: the study has no axis {axis!r} (axes: "
                  f"{', '.join(self.axes) or 'none'})")
            names = [v["name"] for v in self.axes[axis]]
            check(variant in names, f"{what}: axis {axis!r} has no variant {variant!r} "
                  f"(variants: {', '.join(names)})")

    def budget_values(self, budget: str) -> tuple[dict[str, Any], list[int] | None]:
        """The settings ``budget`` puts over ``base``, and the seeds it sets (or None)."""
        check(budget in BUDGETS, f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
        values = dict(self.budgets[budget])
        return values, values.pop("seeds", None)


def _check_per_kind(values: Mapping[str, Any], what: str) -> None:
    """``values[PER_KIND]``, where given, maps registered kinds to mappings of settings."""
    per_kind = values.get(PER_KIND)
    if per_kind is None:
        return
    check(isinstance(per_kind, dict), f"{what}: {PER_KIND} must be a mapping of kind: "
          f"settings, got {type(per_kind).__name__}")
    for kind, settings in per_kind.items():
        check(kind in list_cell_kinds(), f"{what}: {PER_KIND}: {kind!r} is not a kind of "
              f"cell; expected one of {', '.join(list_cell_kinds())}")
        check(isinstance(settings, dict), f"{what}: {PER_KIND}: {kind} must be a mapping of "
              f"{kind} settings, got {type(settings).__name__}")


def _layer(values: Mapping[str, Any], kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the settings ``values`` gives every kind, those it gives ``kind`` alone)."""
    common = {k: v for k, v in values.items() if k != PER_KIND}
    return common, dict((values.get(PER_KIND) or {}).get(kind) or {})


def check_seeds(seeds: Any, what: str) -> list[int]:
    """``seeds`` as a list of distinct non-negative integers (one integer is a list of one)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    check(isinstance(seeds, (list, tuple)) and bool(seeds)
          and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds),
          f"{what} must be a non-empty list of non-negative integers, got {seeds!r}")
    check(len(set(seeds)) == len(seeds), f"{what} lists a seed twice: {seeds!r}")
    return list(seeds)


def load_study(path: str | Path) -> StudyConfig:
    """The study recipe at ``path``; errors name the file and the key."""
    return StudyConfig.from_dict(read_yaml_mapping(path, "study recipe"), source=str(path))


@dataclass
class Cell:
    """One run of a study: its 1-based ``index`` in the expansion, its name, the variant chosen
    on each axis (None where skipped), its seed and kind, the kind's validated ``settings``,
    and the published values that belong to it (defaults filled in)."""

    index: int
    name: str
    variants: dict[str, str | None]
    seed: int
    kind: str
    settings: ConfigBase
    published: list[dict[str, Any]] = field(default_factory=list)
    #: setting -> the name of the cell it references (``{cell: ...}``): run before this one
    references: dict[str, str] = field(default_factory=dict)

    def config_dict(self) -> dict[str, Any]:
        return self.settings.to_dict()


def _merge(values: dict[str, Any], add: Mapping[str, Any], origin: str,
           set_by: dict[tuple[str, ...], str], where: str,
           path: tuple[str, ...] = (), overridable: tuple[str, ...] = ("base",)) -> None:
    """Put ``add`` into ``values`` (mappings key by key), remembering which origin set each
    leaf. Only values of the ``overridable`` origins may be replaced (``base`` by anything; a
    variant's budget also replaces the study's budget and the variant's own values); ``--set``
    replaces anything."""
    for key, value in add.items():
        full = (*path, str(key))
        if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
            inner = dict(values[key])
            _merge(inner, value, origin, set_by, where, full, overridable)
            values[key] = inner
            continue
        before = set_by.get(full)
        if before is not None and before not in overridable and origin != "--set":
            raise StudyError(f"{where} sets {'.'.join(full)!r} in both {before} and {origin}; "
                             "the study would not say which one is meant")
        values[key] = dict(value) if isinstance(value, Mapping) else value
        set_by[full] = origin


@dataclass
class _Draft:
    """A cell before its references are resolved and its settings validated."""

    name: str
    variants: dict[str, str | None]
    seed: int
    kind: str
    values: dict[str, Any]
    where: str
    references: dict[str, str] = field(default_factory=dict)


def _is_reference(value: Any) -> bool:
    return isinstance(value, Mapping) and "cell" in value


def _resolve_reference(study: StudyConfig, draft: _Draft, key: str, ref: Mapping[str, Any],
                       drafts: list[_Draft]) -> _Draft:
    """The one cell of ``drafts`` that ``draft``'s setting ``key`` (``{cell: ...}``) names."""
    what = f"{draft.where}: {key}: {{cell: ...}}"
    unknown = sorted(set(ref) - set(REFERENCE_KEYS))
    check(not unknown, f"{what} takes {' and '.join(REFERENCE_KEYS)}, got {unknown}")
    seed = ref.get("seed", draft.seed)
    check(isinstance(seed, int) and not isinstance(seed, bool),
          f"{what}: seed must be an integer, got {seed!r}")
    target = ref["cell"]
    if isinstance(target, str):
        found = [d for d in drafts if d.name == target] or \
            [d for d in drafts if d.name == f"{target}-s{seed}"]
        wanted = f"the cell {target!r} at seed {seed}"
    elif isinstance(target, Mapping) and target:
        study._check_where(target, what)
        found = [d for d in drafts if d.seed == seed
                 and all(d.variants.get(a) == v for a, v in target.items())
                 and all(d.variants.get(a) in (draft.variants.get(a), None)
                         for a in study.axes if a not in target)]
        wanted = (f"the cell with {', '.join(f'{a}={v}' for a, v in target.items())} and this "
                  f"cell's other variants at seed {seed}")
    else:
        raise StudyError(f"{what}: cell must be a cell's name or a mapping of axis: variant, "
                         f"got {target!r}")
    check(len(found) == 1, f"{what}: the plan has {len(found) or 'no'} "
          f"{'cell' if len(found) == 1 else 'cells'} matching {wanted}"
          + (f" ({', '.join(d.name for d in found)})" if found else
              f" (cells at that seed: {', '.join(d.name for d in drafts if d.seed == seed)})"))
    check(found[0] is not draft, f"{what} names the cell itself")
    return found[0]


def _dependency_order(drafts: list[_Draft]) -> list[_Draft]:
    """``drafts`` in their order, except that a referenced cell comes before every cell that
    references it; a circle of references is an error naming it."""
    by_name = {d.name: d for d in drafts}
    done: dict[str, bool] = {}  # name -> finished (False: on the current path)
    order: list[_Draft] = []

    def visit(d: _Draft, path: list[str]) -> None:
        state = done.get(d.name)
        if state:
            return
        if state is False:
            circle = path[path.index(d.name):] + [d.name]
            raise StudyError(f"{d.where}: the cell references form a circle: "
                             f"{' -> '.join(circle)}")
        done[d.name] = False
        for target in d.references.values():
            visit(by_name[target], [*path, d.name])
        done[d.name] = True
        order.append(d)

    for d in drafts:
        visit(d, [])
    return order


def expand_study(study: StudyConfig, budget: str, *, run_root: str | Path,
                 seeds: list[int] | None = None, overrides: Mapping[str, Any] | None = None,
                 source: str = "study") -> list[Cell]:
    """Every cell of ``study`` under ``budget``, in order, each with validated settings whose
    outputs go to ``run_root/<cell name>``. ``seeds`` (from the command line) win over the
    budget's and the study's; ``overrides`` over every setting. ``source`` (the recipe path)
    is named in errors. Cell references (``{cell: ...}``, see the module docstring) become the
    referenced cell's run folder, and that cell comes first."""
    budget_values, budget_seeds = study.budget_values(budget)
    seeds = check_seeds(seeds, "--seeds") if seeds is not None else (budget_seeds or study.seeds)
    names = list(study.axes)
    combos: list[dict[str, dict[str, Any] | None]] = []
    seen: set[tuple] = set()
    for combo in itertools.product(*(study.axes[a] for a in names)):
        skipped = {s for v in combo for s in v.get("skip_axes", [])}
        chosen = {a: (None if a in skipped else v) for a, v in zip(names, combo)}
        key = tuple(v["name"] if v else None for v in chosen.values())
        if key in seen:  # the same cell reached through a skipped axis' other variants
            continue
        seen.add(key)
        combos.append(chosen)
    published = study.published.values if study.published else []
    drafts: list[_Draft] = []
    for seed in seeds:
        for chosen in combos:
            variants = {a: (v["name"] if v else None) for a, v in chosen.items()}
            name = "-".join([*(n for n in variants.values() if n is not None), f"s{seed}"])
            where = f"{source} cell {name!r}"
            kind = study.kind
            for variant in chosen.values():
                if variant is not None:
                    kind = variant.get("kind", kind)
            # (origin, settings, the origins whose values these may override)
            layers = [("base", study.base, ()),
                      (f"budgets: {budget}", budget_values, ("base",))]
            layers += [(f"axis {axis!r}", {k: v for k, v in variant.items()
                                           if k not in VARIANT_KEYS}, ("base",))
                       for axis, variant in chosen.items() if variant is not None]
            layers += [(f"axis {axis!r} budgets: {budget}", variant["budgets"][budget],
                        ("base", f"budgets: {budget}", f"axis {axis!r}"))
                       for axis, variant in chosen.items()
                       if variant is not None and budget in variant.get("budgets", {})]
            layers.append(("--set", overrides or {}, ()))
            values: dict[str, Any] = {}
            set_by: dict[tuple[str, ...], str] = {}
            for origin, layer, overridable in layers:
                common, own = _layer(layer, kind)
                _merge(values, common, origin, set_by, where, overridable=overridable)
                _merge(values, own, origin, set_by, where, overridable=overridable)
            drafts.append(_Draft(name, variants, seed, kind, values, where))
    for draft in drafts:
        for key, value in list(draft.values.items()):
            if _is_reference(value):
                target = _resolve_reference(study, draft, key, value, drafts)
                draft.references[key] = target.name
                draft.values[key] = str(Path(run_root) / target.name)
    cells: list[Cell] = []
    for draft in _dependency_order(drafts):
        cell_kind = get_cell_kind(draft.kind)
        prepared = cell_kind.prepare(draft.values, draft.seed, Path(run_root) / draft.name,
                                     draft.where)
        settings_obj = cell_kind.settings.from_dict(prepared, source=draft.where)
        cell_published = [study.published.resolved(p) for p in published
                          if all(draft.variants.get(a) == v for a, v in p.where.items())]
        cells.append(Cell(len(cells) + 1, draft.name, draft.variants, draft.seed, draft.kind,
                          settings_obj, cell_published, dict(draft.references)))
    return cells


__all__ = ["BUDGETS", "Cell", "StudyConfig", "StudyError", "check_seeds", "expand_study",
           "load_study"]
