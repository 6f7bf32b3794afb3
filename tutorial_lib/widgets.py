"""Interactive explorers for the lessons, each with a plain-table fallback.

The rank explorer (lesson 05): choose LoRA's rank r, its target modules and a model size, and
see what trains and what training needs in memory, beside full fine-tuning. Where widgets
cannot render (no ipywidgets, no kernel, a notebook viewed on GitHub) a plain table stands in.
"""

from __future__ import annotations

from dataclasses import dataclass

from tutorial_lib.lowrank import architecture_of
from tutorial_lib.memory import ARCHITECTURES, RECIPES, Architecture, MemoryEstimate, estimate

PRESETS = {  # what the explorer offers -> memory.ARCHITECTURES (shapes of public models)
    "this model": "SmolLM2-135M",
    "1B": "Llama-3.2-1B",
    "7B": "Llama-2-7B",
    "70B": "Llama-2-70B",
}
TARGETS = {"attention only": "attention", "all linear": "all-linear"}
RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class RankChoice:
    """One setting of the rank explorer; a wrong value is refused with the allowed ones."""

    preset: str = "this model"  # a key of PRESETS
    r: int = 8  # LoRA's rank
    targets: str = "all linear"  # a key of TARGETS
    precision: str = "fp32"  # a key of memory.RECIPES: how the base weights are stored
    batch: int = 8  # sequences per step
    seq_len: int = 128  # tokens per sequence

    def __post_init__(self) -> None:
        for knob, allowed in (
            ("preset", PRESETS),
            ("targets", TARGETS),
            ("precision", RECIPES),
        ):
            if getattr(self, knob) not in allowed:
                raise ValueError(
                    f"{knob} must be one of {list(allowed)}, got {getattr(self, knob)!r}"
                )
        for knob in ("r", "batch", "seq_len"):
            value = getattr(self, knob)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{knob} must be a positive integer, got {value!r}")

    def estimates(self, arch: Architecture) -> tuple[MemoryEstimate, MemoryEstimate]:
        """`memory.estimate` of LoRA as chosen, and of full fine-tuning in the same recipe."""
        shared = dict(dtype=RECIPES[self.precision], batch=self.batch, seq_len=self.seq_len)
        lora = estimate(arch, method="lora", rank=self.r, targets=TARGETS[self.targets], **shared)
        return lora, estimate(arch, method="full", **shared)


@dataclass
class RankNumbers:
    """What the explorer shows for one choice."""

    model: str
    trainable: int  # LoRA's trained values
    total: int  # the base's parameters plus the adapters
    lora: MemoryEstimate
    full: MemoryEstimate

    @property
    def trainable_percent(self) -> float:
        return 100 * self.trainable / self.total


def rank_numbers(choice: RankChoice, this_model: Architecture | None = None) -> RankNumbers:
    """The numbers behind the explorer: trainable count and both memory estimates."""
    arch = ARCHITECTURES[PRESETS[choice.preset]]
    if choice.preset == "this model" and this_model is not None:
        arch = this_model
    lora, full = choice.estimates(arch)
    n = lora.trainable_params
    return RankNumbers(model=arch.name, trainable=n, total=arch.n_params + n, lora=lora, full=full)


def ledger_table(numbers: RankNumbers):
    """LoRA's estimate beside full fine-tuning's, in GiB."""
    import pandas as pd

    rows = {
        name: {"LoRA (GiB)": lora / 2**30, "full FT (GiB)": full / 2**30}
        for (name, lora), (_, full) in zip(numbers.lora.rows(), numbers.full.rows())
    }
    return pd.DataFrame.from_dict(rows, orient="index").round(2)


def describe(choice: RankChoice, numbers: RankNumbers) -> str:
    """One line: what trains, for the choice."""
    return (
        f"{numbers.model}, r = {choice.r}, {choice.targets}: {numbers.trainable:,} trainable "
        f"({numbers.trainable_percent:.3f} % of {numbers.total:,})"
    )


def rank_table(
    ranks: tuple[int, ...] = (1, 8, 64),
    presets: tuple[str, ...] = tuple(PRESETS),
    targets: tuple[str, ...] = tuple(TARGETS),
    precision: str = "fp32",
    this_model: Architecture | None = None,
):
    """The explorer as a plain table over a few values: one row per model, targets and rank."""
    import pandas as pd

    rows = []
    for preset in presets:
        for target in targets:
            for r in ranks:
                choice = RankChoice(preset, r, target, precision)
                numbers = rank_numbers(choice, this_model)
                rows.append(
                    {
                        "model": numbers.model,
                        "targets": target,
                        "r": r,
                        "trainable": numbers.trainable,
                        "trainable %": round(numbers.trainable_percent, 3),
                        "LoRA total (GiB)": round(numbers.lora.total / 2**30, 2),
                        "full FT total (GiB)": round(numbers.full.total / 2**30, 2),
                    }
                )
    return pd.DataFrame(rows).set_index(["model", "targets", "r"])


def widgets_can_render() -> bool:
    """ipywidgets is installed and we run in a kernel (a plain python or IPython shell has none)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def rank_explorer(model=None, precision: str = "fp32"):
    """Sliders for r, targets and model size that update the trainable count and the memory
    estimate live. Returns the widget; where widgets cannot render, prints `rank_table()`.

    `model`: a loaded model whose shape the "this model" preset uses (default: SmolLM2-135M's).
    The widget's plain-text form is the table too, for viewers without the widget frontend.
    """
    this_model = architecture_of(model) if model is not None else None
    if not widgets_can_render():
        print(rank_table(precision=precision, this_model=this_model).to_string())
        return None
    return _explorer_widget(RankChoice(precision=precision), this_model)


def _explorer_widget(start: RankChoice, this_model: Architecture | None):
    """The ipywidgets form of the explorer (kept apart: only this part needs a frontend)."""
    import ipywidgets as w

    class RankExplorer(w.VBox):
        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            bundle["text/plain"] = self.plain  # what GitHub and nbconvert show
            return bundle

    r = w.SelectionSlider(options=RANKS, value=start.r, description="rank r")
    targets = w.ToggleButtons(options=list(TARGETS), value=start.targets, description="targets")
    preset = w.Dropdown(options=list(PRESETS), value=start.preset, description="model")
    precision = w.Dropdown(options=list(RECIPES), value=start.precision, description="weights")
    headline, table = w.HTML(), w.HTML()
    box = RankExplorer([preset, targets, r, precision, headline, table])

    def update(_=None) -> None:
        choice = RankChoice(preset.value, r.value, targets.value, precision.value)
        numbers = rank_numbers(choice, this_model)
        frame = ledger_table(numbers)
        headline.value = f"<b>{describe(choice, numbers)}</b>"
        table.value = frame.to_html()
        box.plain = f"{describe(choice, numbers)}\n{frame.to_string()}"

    for control in (r, targets, preset, precision):
        control.observe(update, names="value")
    update()
    return box


def comparison_explorer(
    summary: list[dict], x: str = "domain_accuracy_after", y: str = "retention"
):
    """Pick methods and axes, and see them plotted (`plots.method_scatter`, Pareto front ringed).
    Returns the widget; where widgets cannot render, returns the default plot instead."""
    from tutorial_lib.plots import AXES, method_scatter

    done = [r for r in summary if r["seeds"]]
    if not widgets_can_render():
        return method_scatter(done, x, y, front=_front(done, x, y))
    import ipywidgets as w
    from IPython.display import display

    class ComparisonExplorer(w.VBox):
        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            bundle["text/plain"] = self.plain  # what GitHub and nbconvert show
            return bundle

    names = [r["method"] for r in done]
    pick = w.SelectMultiple(options=names, value=tuple(names), rows=8, description="methods")
    x_axis = w.Dropdown(options=list(AXES), value=x, description="x")
    y_axis = w.Dropdown(options=list(AXES), value=y, description="y")
    out = w.Output()

    box = ComparisonExplorer([w.HBox([pick, w.VBox([x_axis, y_axis])]), out])

    def update(_=None) -> None:
        rows = [r for r in done if r["method"] in pick.value]
        front = _front(rows, x_axis.value, y_axis.value) if rows else []
        box.plain = (
            f"Comparison explorer (needs a live kernel): {len(rows)} methods, "
            f"x = {x_axis.value}, y = {y_axis.value}; not beaten on both: {', '.join(front)}"
        )
        with out:
            out.clear_output(wait=True)
            if rows:
                display(method_scatter(rows, x_axis.value, y_axis.value, front=front))

    for control in (pick, x_axis, y_axis):
        control.observe(update, names="value")
    update()
    return box


def _front(rows: list[dict], x: str, y: str) -> list[str]:
    """The Pareto front on two of `plots.AXES`, each the right way up."""
    from tutorial_lib.plots import AXES
    from tutorial_lib.results import pareto_front

    return pareto_front(rows, x, y, higher=(AXES[x][2], AXES[y][2]))
