"""The worked solutions in the lessons (issue 24 item 6): one collapsed cell per exercise, in
order, in a `## Solutions` section that closes the lesson, after its appendix (so the exercises are
read without the answers between them, and the answers are not main text), and every number a
solution gives as its answer is what the library computes or a committed results file holds, so a
stale solution fails.

The numbers come from `tutorial_lib.exercise_answers` (recomputed here and compared with its
committed record, `benchmarks/results/exercise-answers.json`) and from the fair-rate sweep's
record (`benchmarks/results/rate-sweep.json`). The prose check (`tests/test_prose.py`) also holds
every solution's numbers to an output above it or the file it names. Reads notebooks and JSON
only; the recomputation builds shape-only models on the meta device and reads committed results
(seconds), and a `slow` test reads two weight matrices of the cached model (lesson 06).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from tutorial_lib import exercise_answers

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / exercise_answers.RECORD
SWEEP = ROOT / exercise_answers.SWEEP
SOLVED = ["00_setup_and_baseline", "01_full_finetuning", "02_catastrophic_forgetting"]
SOLVED += ["03_additive_methods", "04_selective_methods", "05_lora", "05b_lora_variants"]
SOLVED += ["06_qlora", "07_choosing_a_method", "08_your_own_data"]
EXERCISES = re.compile(r"^## Exercises\n(.*?)(?=^## |\Z)", re.M | re.S)
SUMMARY = re.compile(r"^<details><summary>Solution to exercise (\d+): [^<]+</summary>\n\n", re.M)
ITEM = re.compile(r"^(\d+)\. ", re.M)
HEADING = re.compile(r"^#{1,3} ", re.M)
TITLE = re.compile(r"Solution to exercise (\d+)")  # a solution, collapsed or not
SOLUTIONS = re.compile(r"^## Solutions[ \t]*$", re.M)  # the section the solutions live in
APPENDIX = re.compile(r"^#{1,6} Appendix\b", re.M)


def lesson(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def exercise_cell(nb: nbformat.NotebookNode) -> int:
    (at,) = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "markdown" and EXERCISES.search(c.source)
    ]
    return at


def solutions_cell(nb: nbformat.NotebookNode) -> int:
    """The index of the lesson's one `## Solutions` heading cell."""
    (at,) = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "markdown" and SOLUTIONS.search(c.source)
    ]
    return at


def solutions(name: str) -> dict[int, str]:
    """The lesson's solution cells in its Solutions section, by exercise number."""
    nb = lesson(name)
    found = {}
    for cell in nb.cells[solutions_cell(nb) + 1 :]:
        m = SUMMARY.match(cell.source) if cell.cell_type == "markdown" else None
        if m:
            found[int(m.group(1))] = cell.source
    return found


def committed_output(name: str) -> str:
    """The text the lesson's code cells printed, as committed."""
    return "".join(
        out.get("text", "")
        for c in lesson(name).cells
        if c.cell_type == "code"
        for out in c.get("outputs", [])
    )


def recorded() -> dict:
    return json.loads(RECORD.read_text(encoding="utf-8"))


def swept(method: str, lr: float) -> dict:
    rates = json.loads(SWEEP.read_text(encoding="utf-8"))["methods"][method]["rates"]
    (rate,) = [r for r in rates if r["lr"] == lr]
    return rate


# --- every exercise has its solution, in the Solutions section ---------------------------------


def exercise_numbers(nb: nbformat.NotebookNode) -> list[int]:
    """The numbers of the exercises the lesson sets: the items of its Exercises section, from the
    heading to the next heading or code cell."""
    at = exercise_cell(nb)
    listed = ITEM.findall(EXERCISES.search(nb.cells[at].source).group(1))
    for cell in nb.cells[at + 1 :]:
        if cell.cell_type == "code" or HEADING.search(cell.source):
            break
        listed += ITEM.findall(cell.source)
    return [int(n) for n in listed]


def layout_problems(nb: nbformat.NotebookNode) -> list[str]:
    """What breaks the rule: one `## Solutions` section, after every appendix, holding one
    collapsed solution per exercise in order and nothing else; no solution anywhere before it."""
    exercises = exercise_numbers(nb)
    problems = []
    if exercises != list(range(1, len(exercises) + 1)):
        problems.append(f"exercises numbered {exercises}")
    headings = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "markdown" and SOLUTIONS.search(c.source)
    ]
    if len(headings) != 1:
        return [*problems, f"{len(headings)} '## Solutions' headings, not one"]
    (at,) = headings
    body = [c for c in nb.cells[:at] if c.cell_type == "markdown"]
    if any(TITLE.search(c.source) for c in body):
        problems.append("a solution left in the body, before the Solutions section")
    if any(APPENDIX.search(c.source) for c in nb.cells[at:] if c.cell_type == "markdown"):
        problems.append("an appendix after the Solutions section")
    if at < exercise_cell(nb):
        problems.append("the Solutions section before the exercises")
    section = [
        c for c in nb.cells[at + 1 :] if c.cell_type == "markdown" and TITLE.search(c.source)
    ]
    if len(section) < len(nb.cells) - at - 1 or re.search(r"\n#", nb.cells[at].source):
        problems.append("something other than solution cells in the Solutions section")
    shown = [int(m.group(1)) for c in section if (m := TITLE.search(c.source))]
    if shown != exercises:
        problems.append(f"exercises {exercises}, solutions {shown}")
    for cell in section:
        closed = cell.source.rstrip().endswith("</details>") and cell.source.count("<details") == 1
        if not SUMMARY.match(cell.source) or not closed:
            problems.append("a solution not collapsed in one closed <details>")
        elif cell.source.count("```python") != 1:
            problems.append("a solution that does not show its code once")
    return problems


@pytest.mark.parametrize("name", SOLVED)
def test_each_exercise_has_a_collapsed_solution_in_the_solutions_section(name):
    assert layout_problems(lesson(name)) == [], name


def solution_at(nb: nbformat.NotebookNode, exercise: int) -> int:
    (at,) = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "markdown"
        and (m := SUMMARY.match(c.source))
        and int(m.group(1)) == exercise
    ]
    return at


def test_the_layout_rule_refuses_a_solution_left_in_the_body():
    nb = lesson("05_lora")
    moved = nb.cells.pop(solution_at(nb, 2))
    nb.cells.insert(exercise_cell(nb) + 1, moved)  # right after the exercises, as lessons had it
    assert layout_problems(nb) == [
        "a solution left in the body, before the Solutions section",
        "exercises [1, 2, 3, 4], solutions [1, 3, 4]",
    ]


def test_the_layout_rule_refuses_a_missing_or_misordered_solution():
    nb = lesson("05_lora")
    del nb.cells[solution_at(nb, 3)]
    assert layout_problems(nb) == ["exercises [1, 2, 3, 4], solutions [1, 2, 4]"]
    nb = lesson("05_lora")
    one, two = solution_at(nb, 1), solution_at(nb, 2)
    nb.cells[one], nb.cells[two] = nb.cells[two], nb.cells[one]
    assert layout_problems(nb) == ["exercises [1, 2, 3, 4], solutions [2, 1, 3, 4]"]


def test_the_layout_rule_refuses_an_open_solution_and_a_section_before_the_appendix():
    nb = lesson("02_catastrophic_forgetting")
    at = solution_at(nb, 1)
    nb.cells[at].source = nb.cells[at].source.replace(
        "<details><summary>", "<details open><summary>"
    )
    assert "a solution not collapsed in one closed <details>" in layout_problems(nb)
    nb = lesson("02_catastrophic_forgetting")
    heading = nb.cells.pop(solutions_cell(nb))
    nb.cells.insert(exercise_cell(nb) + 1, heading)  # the section, but above the appendix
    assert layout_problems(nb) == [
        "an appendix after the Solutions section",
        "something other than solution cells in the Solutions section",
    ]


@pytest.mark.parametrize("name", SOLVED)
def test_solutions_are_not_main_text(name):
    from tutorial_lib import prose

    main = "".join(prose.main_text(lesson(name)))
    assert "Solution to exercise" not in main


def closing_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Every lesson closes the same way: one cell holding `## Summary` then `## Exercises`, the
    next cell `## Next` and nothing else, then the appendix (if any) and the solutions."""
    at = exercise_cell(nb)
    problems = []
    if not nb.cells[at].source.startswith("## Summary"):
        problems.append("the exercises are not in the summary's cell")
    after = nb.cells[at + 1] if at + 1 < len(nb.cells) else None
    if after is None or not after.source.startswith("## Next\n"):
        problems.append("no `## Next` cell right after the summary and exercises")
    elif len(HEADING.findall(after.source)) != 1:
        problems.append("the `## Next` cell holds another section")
    return problems


@pytest.mark.parametrize("name", SOLVED)
def test_every_lesson_closes_with_summary_exercises_then_next(name):
    assert closing_problems(lesson(name)) == [], name


def test_the_closing_rule_refuses_next_inside_the_summary_or_an_appendix_in_next():
    nb = lesson("03_additive_methods")
    at = exercise_cell(nb)
    nb.cells[at].source += "\n\n" + nb.cells.pop(at + 1).source  # Next inside the summary again
    assert closing_problems(nb) == ["no `## Next` cell right after the summary and exercises"]
    nb = lesson("03_additive_methods")
    at = exercise_cell(nb)
    nb.cells[at + 1].source += "\n\n" + nb.cells.pop(at + 2).source  # the appendix joins Next
    assert closing_problems(nb) == ["the `## Next` cell holds another section"]


# --- the numbers the solutions give --------------------------------------------------------------


STALE = "stale: python -m tutorial_lib.exercise_answers > benchmarks/results/exercise-answers.json"


def test_the_record_is_what_the_library_computes():
    """Every answer that needs no weights (the slow test below recomputes them all)."""
    shapes = json.loads(json.dumps(exercise_answers.shape_answers()))
    assert exercise_answers.merged(recorded(), shapes) == recorded(), STALE


@pytest.mark.slow
def test_the_record_is_what_the_library_computes_from_the_weights_too():
    assert recorded() == json.loads(json.dumps(exercise_answers.answers())), STALE


def test_lesson_01_exercise_1_quotes_the_sweep_on_either_side():
    text = solutions("01_full_finetuning")[1]
    for lr in (1e-4, 3e-4):
        rate = swept("full", lr)
        recall, ce = (
            f"recall {rate['domain_recall_after']:.3f}",
            f"ΔCE {rate['general_ce_change']:.3f}",
        )
        flips = (
            f"{rate['probe_lost']} probe items lost" if lr == 1e-4 else f"{rate['probe_lost']} lost"
        )
        for quoted in (recall, ce, flips, f"{rate['probe_gained']} gained"):
            assert quoted in text, f"lr {lr:g}: {quoted!r} not in the solution"


def test_lesson_01_exercises_2_and_3():
    answers = recorded()["01"]
    frozen, text = answers["2"], solutions("01_full_finetuning")[2]
    assert f"{frozen['frozen_params']:,} parameters" in text
    assert f"by {frozen['optimizer_mib_saved']:.0f} MiB" in text
    assert f"by {frozen['gradients_mib_saved']:.0f} MiB" in text
    assert frozen["weights_mib_saved"] == 0  # the frozen matrix is still stored, counted once
    text = solutions("01_full_finetuning")[3]
    for dtype, words in (
        ("fp32", "In fp32, {} blocks fit"),
        ("bf16", "mixed precision, {} blocks"),
    ):
        largest = answers["3"][dtype]
        assert words.format(largest["blocks"]) in text
        assert f"{largest['params_billions']:.2f} B" in text
        assert f"{largest['total_gib']:.2f} GiB" in text


def test_lesson_03_exercise_2_quotes_the_sweeps_run_and_why_the_rule_moved_past_it():
    text = " ".join(solutions("03_additive_methods")[2].split())
    rate = swept("ia3", 3e-2)
    assert f"(IA)³ at 0.03 recalls {rate['domain_recall_after']:.3f}" in text
    assert f"ΔCE {rate['general_ce_change']:.3f}" in text
    assert f"{rate['probe_lost']} probe items lost against {rate['probe_gained']} gained" in text
    record = json.loads(SWEEP.read_text(encoding="utf-8"))["methods"]["ia3"]
    best = swept("ia3", record["best_lr"])
    assert record["chosen_lr"] == record["best_lr"] == 1e-1  # the solution's "fair rate is 0.1"
    assert rate["domain_recall_after"] < best["domain_recall_after"] - record["margin"]
    assert (
        f"({record['margin']:.3f}) below the best rate's {best['domain_recall_after']:.3f}" in text
    )
    assert f"ΔCE ({best['general_ce_change']:.3f} at 0.1)" in text


@pytest.mark.parametrize(
    "exercise, key, words",
    [
        (3, "bottleneck_64", "A bottleneck of 64 trains {:,} parameters"),
        (3, "bottleneck_16", "against the default's {:,}"),
        (4, "houlsby", "Houlsby placement trains {:,} parameters"),
        (4, "pfeiffer", "twice Pfeiffer's {:,}"),
        (5, "prefix_with_mlp", "prefix tuning trains {:,} parameters"),
    ],
)
def test_lesson_03_parameter_counts(exercise, key, words):
    value = recorded()["03"][str(exercise)][key]
    text = " ".join(solutions("03_additive_methods")[exercise].split())
    assert words.format(value) in text


def test_lesson_03_exercise_5_matches_peft_in_the_committed_output():
    printed = committed_output("03_additive_methods")
    count = recorded()["03"]["5"]["prefix_with_mlp"]
    assert re.search(rf"prefix-tuning \+ MLP: trainable params: {count:,}\b", printed)


def test_lesson_00_exercise_3_quotes_the_committed_scores():
    printed = committed_output("00_setup_and_baseline")
    acc = re.search(r"probe accuracy\s+(\d\.\d{3})", printed).group(1)
    norm = re.search(r"probe acc_norm (\d\.\d{3})", printed).group(1)
    text = " ".join(solutions("00_setup_and_baseline")[3].split())
    assert f"accuracy {acc} above" in text and f"({norm} against {acc} above)" in text


def flat(name: str, exercise: int) -> str:
    return " ".join(solutions(name)[exercise].split())


# --- lesson 06 ------------------------------------------------------------------------------------


def test_lesson_06_exercise_1_quotes_error_and_storage_per_block():
    answers, text = recorded()["06"]["1"], flat("06_qlora", 1)
    errors, storage = answers["errors"], answers["storage"]
    nf4 = [errors[f"blocks of {b}"]["nf4"] for b in exercise_answers.BLOCKS]
    assert nf4 == sorted(nf4), "the solution says the error grows with the block"
    for block, error in zip(exercise_answers.BLOCKS, nf4):
        assert f"{error:.4f} in blocks of {block}" in text
        assert errors[f"blocks of {block}"]["nf4"] < min(
            errors[f"blocks of {block}"][book] for book in ("int4", "fp4")
        ), "the solution says NF4 is the closest 4-bit book at every block size"
        bits = f"{round(storage[str(block)]['bits'], 3):g}"
        assert re.search(rf"{re.escape(bits)} (bits per weight )?in blocks of {block}\b", text)
    assert f"({errors['whole tensor']['nf4']:.4f} with one scale" in text
    assert f"8-bit scales cost {storage['64']['bits_double_quant']:.3f} bits" in text


def test_lesson_06_exercise_2_quotes_the_embeddings_table():
    answers, text = recorded()["06"]["2"], flat("06_qlora", 2)
    blocked, whole = answers["errors"]["blocks of 64"], answers["errors"]["whole tensor"]
    assert f"up to {answers['distinct_per_32_max']} distinct values" in text
    assert f"(mean {answers['distinct_per_32_mean']:.1f})" in text
    assert blocked["nf4"] < blocked["fp4"] < blocked["int4"]
    assert (
        f"{blocked['nf4']:.4f} against FP4's {blocked['fp4']:.4f} and int4's {blocked['int4']:.4f}"
        in text
    )
    assert whole["fp4"] < whole["nf4"]  # "FP4 is ahead" with one scale
    assert f"({whole['fp4']:.4f} against NF4's {whole['nf4']:.4f})" in text
    down = recorded()["06"]["1"]["errors"]["blocks of 64"]
    assert all(blocked[book] > down[book] for book in ("int4", "fp4", "nf4"))  # "worse than"


def test_lesson_06_exercise_5_quotes_the_sweep_at_three_times_the_rate():
    text = flat("06_qlora", 5)
    for method, name in (("lora", "LoRA's"), ("qlora", "QLoRA's")):
        at, above = swept(method, 3e-3), swept(method, 1e-2)
        assert above["domain_recall_after"] < at["domain_recall_after"]  # "fell"
        recall = f"{at['domain_recall_after']:.3f} to {above['domain_recall_after']:.3f}"
        assert f"{name} {'recall fell ' if method == 'lora' else ''}from {recall}" in text
    ce = [swept(m, 1e-2)["general_ce_change"] for m in ("lora", "qlora")]
    assert f"ΔCE rose to {ce[0]:.3f} and {ce[1]:.3f}" in text


def test_lesson_06_exercise_6_quotes_the_fresh_process_memory():
    fresh, text = recorded()["06"]["6"], flat("06_qlora", 6)
    lora, qlora = fresh["lora"], fresh["qlora"]
    assert (
        f"LoRA's loaded model held {lora['loaded_mib']:.1f} MiB and QLoRA's "
        f"{qlora['loaded_mib']:.1f} MiB" in text
    )
    assert (
        f"training added {lora['training_adds_mib']:.1f} MiB to the one and "
        f"{qlora['training_adds_mib']:.1f} MiB to the other" in text
    )
    assert abs(lora["training_adds_mib"] - qlora["training_adds_mib"]) < 10  # "the same"


# --- lesson 07 ------------------------------------------------------------------------------------


def test_lesson_07_exercise_1_the_seeds_already_disagree_on_recall():
    seeds, text = recorded()["07"]["1"], flat("07_choosing_a_method", 1)
    lora, qlora = seeds["lora"], seeds["qlora"]
    ahead = {s: lora[s]["recall"] > qlora[s]["recall"] for s in lora}
    assert ahead == {"0": False, "1": True, "2": True}  # so no fourth seed makes it a ranking
    r = {m: {s: f"{v['recall']:.3f}" for s, v in seeds[m].items()} for m in seeds}
    assert f"({r['qlora']['0']} against LoRA's {r['lora']['0']}, section 7)" in text
    assert (
        f"({r['lora']['1']} against {r['qlora']['1']}, and {r['lora']['2']} against "
        f"{r['qlora']['2']};" in text
    )
    assert all(qlora[s]["general_ce_change"] > lora[s]["general_ce_change"] for s in lora)
    ce = {m: [f"{seeds[m][s]['general_ce_change']:.3f}" for s in "012"] for m in seeds}
    assert (
        f"QLoRA cost {ce['qlora'][0]}, {ce['qlora'][1]} and {ce['qlora'][2]} against LoRA's "
        f"{ce['lora'][0]}, {ce['lora'][1]} and {ce['lora'][2]}" in text
    )


def test_lesson_07_exercise_2_quotes_the_table_at_another_target():
    answer, text = recorded()["07"]["2"], flat("07_choosing_a_method", 2)
    assert answer["target"] == 0.7 and answer["order"] == ["full", "ln-tuning", "adapter", "ia3"]
    names = {"full": "full fine-tuning", "ln-tuning": "norm tuning", "adapter": "the adapter"}
    names["ia3"] = "(IA)³"
    for method, ce in answer["general_ce_change"].items():
        assert f"{names[method]} {ce:.3f}" in text
    labels = {"lora": "LoRA's best rate recalled", "qlora": "QLoRA's"}
    labels |= {"top-layers": "the top blocks'", "dora": "DoRA's"}
    assert set(answer["no_figure"]) == set(labels)
    for method, why in answer["no_figure"].items():
        best = re.search(r"\((\d\.\d{3}) < 0\.700\)", why).group(1)
        assert f"{labels[method]} {best}" in text


def test_lesson_07_exercise_3_quotes_the_agreement_with_and_without_floors():
    answer, text = recorded()["07"]["3"], flat("07_choosing_a_method", 3)
    assert answer["tasks"] == ["arc_easy", "hellaswag", "piqa"]  # the lesson's, above chance

    def spearman(part: str, name: str) -> tuple[str, str, str, int]:
        found = answer[part][name]
        lo, hi = found["spearman_ci95"]
        return f"{found['spearman']:.2f}", f"{lo:.2f}", f"{hi:.2f}", found["n"]

    (w, wlo, whi, wn), (o, olo, ohi, on) = (
        spearman(p, "probe") for p in ("with_floors", "without_floors")
    )
    assert f"from {w} ({wlo} to {whi}, over {wn} runs) to {o} ({olo} to {ohi}, over {on})" in text
    assert f"the {wn - on} floor runs" in text
    (cw, *_), (co, colo, cohi, _) = (spearman(p, "ce") for p in ("with_floors", "without_floors"))
    assert f"ΔCE's from {cw} to {co} ({colo} to {cohi})" in text
    every = answer["without_floors_every_task"]["probe"]
    assert f"(Spearman {every['spearman']:.2f} over the same runs)" in text
    assert answer["without_floors"]["probe"]["spearman_ci95"][0] > 0  # "well above zero"


def test_lesson_07_exercise_4_quotes_the_prediction_for_eight_blocks():
    answer, text = recorded()["07"]["4"], flat("07_choosing_a_method", 4)
    two, eight = answer["2"], answer["8"]
    est, measured = two["beyond_weights_mib"], two["measured_mib"]
    assert (
        f"{est['4']:.1f} MiB beyond the weights at batch 4 and {est['8']:.1f} MiB at batch 8, "
        f"against {measured['4']:.1f} and {measured['8']:.1f} measured" in text
    )
    predicted = eight["beyond_weights_mib"]
    assert f"predicts {predicted['4']:.1f} MiB and {predicted['8']:.1f} MiB" in text
    assert (
        f"{eight['trainable_params']:,} parameters instead of {two['trainable_params']:,}" in text
    )
    for part, words in (("gradients", "gradients grow fourfold"), ("optimizer", "optimizer state")):
        a, b = two["batch_8_mib"][part], eight["batch_8_mib"][part]
        assert abs(b / a - 4) < 0.01 and f"{words} ({a:.1f} to {b:.1f} MiB)" in text
    a, b = two["batch_8_mib"]["activations"], eight["batch_8_mib"]["activations"]
    assert b < 2 * a and f"grow far less ({a:.1f} to {b:.1f} MiB)" in text


def test_lesson_07_exercise_5_quotes_checkpoints_against_forgetting():
    answer, text = recorded()["07"]["5"], flat("07_choosing_a_method", 5)
    mib, ce = answer["checkpoint_mib"], answer["general_ce_change"]
    assert answer["front"] == ["full", "lora-scratch", "prompt-scratch"]
    assert set(answer["front_of_methods_that_recalled"]) == {"full", "lora-scratch", "ln-tuning"}
    assert answer["recall"]["prompt-scratch"] == 0  # "recalled nothing"
    assert f"the least ΔCE, {ce['full']:.3f}, in a {mib['full']:.3f} MiB checkpoint" in text
    assert f"ΔCE {ce['lora-scratch']:.3f} in {mib['lora-scratch']:.3f} MiB, one seed" in text
    assert f"(ΔCE {ce['ln-tuning']:.3f} in {mib['ln-tuning']:.3f} MiB)" in text
    assert f"three seeds, {ce['lora']:.3f}," in text
    gib = answer["customers_gib"]
    assert answer["customers"] == 100  # "a hundred"
    assert f"full fine-tunes take {gib['full']:.2f} GiB" in text
    assert f"LoRA adapters {gib['lora']:.2f} GiB" in text
    assert f"norm gains {gib['ln-tuning']:.2f} GiB" in text
