"""Studies: a grid of ordinary runs described by one YAML recipe (``recipes/studies/``), run
by ``squeezelab study RECIPE`` resumably, cell by cell, into one results JSON.

    recipe.py     the recipe (StudyConfig: base, axes, seeds, budgets, published, report) and
                  its expansion into cells
    published.py  the publication's numbers in a recipe (source:, published:)
    report_spec.py  what the report draws (report:, one ReportSpec per table or plot)
    errors.py     StudyError and the checks the recipe's parts share
    registry.py   the kinds of cell (one decorator each) and what a running cell gets
    kinds/        one module per kind: train.py (an ordinary train() run); compress, quantize,
                  dsd, distill, sensitivity (cells that start from another cell's model)
    model_cells.py  what those share: the source checkpoint a setting names, its data
    runner.py     run the cells (all or one), list one command per cell, merge the results
    sharing.py    what lets processes share a study folder: cell claims, speed pins
    parallel.py   several cells at once on one machine (--jobs N): worker processes, taking
                  the cells of several studies as one pool
    results.py    the per-cell records and the merged results JSON: its schema is written down
                  in that module's docstring

    plan = plan_study("recipes/studies/bypass.yaml", "smoke")
    results = run_study(plan)               # or run_study(plan, cell=3): one cell
    print(format_summary(results))
"""
from squeezelab.workflows.studies.parallel import run_studies_jobs, run_study_jobs
from squeezelab.workflows.studies.recipe import (
    BUDGETS,
    Cell,
    StudyConfig,
    StudyError,
    expand_study,
    load_study,
)
from squeezelab.workflows.studies.registry import (
    CellContext,
    CellInterrupted,
    get_cell_kind,
    list_cell_kinds,
    register_cell_kind,
)
from squeezelab.workflows.studies.runner import (
    StudyPlan,
    cell_commands,
    format_summary,
    import_results,
    merge_command,
    merge_study,
    plan_study,
    run_studies,
    run_study,
)

__all__ = ["BUDGETS", "Cell", "CellContext", "CellInterrupted", "StudyConfig", "StudyError",
           "StudyPlan", "cell_commands", "expand_study", "format_summary", "get_cell_kind",
           "import_results", "list_cell_kinds", "load_study", "merge_command", "merge_study",
           "plan_study",
           "register_cell_kind", "run_studies", "run_studies_jobs", "run_study", "run_study_jobs"]
