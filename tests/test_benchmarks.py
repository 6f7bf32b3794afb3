"""benchmarks/*.py: their arithmetic, their instruments and the lm-eval task, on the tiny model."""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tutorial_lib import data
from tutorial_lib.evaluate import evaluate_choices, question_prompt
from tutorial_lib.methods import apply_method

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
MODULES = ("run", "common", "training", "probe_bench", "timing", "lessons")


@pytest.fixture(scope="module")
def benchmarks():
    """The scripts' modules (not part of the package), imported as run.py imports its siblings."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield SimpleNamespace(**{name: importlib.import_module(name) for name in MODULES})
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name in MODULES:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def run(benchmarks):
    return benchmarks.run


@pytest.fixture(scope="module")
def training(benchmarks):
    return benchmarks.training


@pytest.fixture(scope="module")
def probe(benchmarks):
    return benchmarks.probe_bench


@pytest.fixture
def probe_items():
    return data.load_probe(limit=4)


def test_matmul_flops_is_the_flop_count_over_the_time(training, fake_clock, monkeypatch):
    """Each n x n matmul takes 4 ms on the fake clock: every rate is 2n³ FLOP / 4 ms, and each
    timing runs matmuls until min_seconds have passed (3 of them for 10 ms), after one warm-up."""
    real_mm, products = torch.mm, []

    def timed_mm(a, b, **kwargs):
        fake_clock.advance(0.004)
        products.append(real_mm(a, b, **kwargs))
        return products[-1]

    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=fake_clock))
    monkeypatch.setattr(torch, "mm", timed_mm)
    rates = training.matmul_flops(
        64, torch.float32, repeats=2, min_seconds=0.01, device=torch.device("cpu")
    )
    assert rates == [pytest.approx(2 * 64**3 / 0.004)] * 2
    assert len(products) == 1 + 2 * 3


def test_mfu_arithmetic(training):
    assert training.training_flops_per_token(1_000_000) == 6_000_000
    # 100 tokens/s x 6 MFLOP/token = 0.6 GFLOP/s of a 1.2 GFLOP/s peak
    assert training.mfu(100.0, 1_000_000, 1.2e9) == pytest.approx(0.5)


def test_step_times_leave_out_warmup_and_the_unended_last_step(training):
    starts = [0.0, 10.0, 11.0, 12.0, 14.0]  # step 0 is slow (warm-up); step 4 has no end mark
    timed = training.step_times(starts, tokens=[5, 5, 6, 8, 99], skip=1)
    assert timed.seconds == [1.0, 1.0, 2.0]
    assert timed.tokens == [5, 6, 8]
    assert timed.warmup_seconds == [10.0]
    assert timed.tokens_per_sec == pytest.approx(19 / 4)


def test_step_clock_counts_unpadded_tokens_per_forward(training, tiny):
    model, _ = tiny
    clock = training.StepClock(model)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    for _ in range(3):
        model(input_ids=torch.ones_like(mask), attention_mask=mask)
    timed = clock.stop(skip=0)
    assert timed.tokens == [5, 5]  # three forwards = two ended steps
    model(input_ids=torch.ones_like(mask), attention_mask=mask)
    assert len(clock.starts) == 3  # stop() removed the hook


def test_settings_reject_too_few_steps_to_time(run):
    with pytest.raises(ValueError, match="train_steps"):
        replace(run.SETTINGS["quick"], train_steps=3)  # 2 warm-up + 1 without an end mark


def test_only_rejects_unknown_names_and_keeps_dependency_order(run, capsys):
    args = run.parse_args(["--json", "x.json", "--only", "mfu,matmul", "--notebooks"])
    assert args.selected == ["matmul", "mfu", "notebooks"]
    with pytest.raises(SystemExit):
        run.parse_args(["--json", "x.json", "--only", "matmull"])
    assert "allowed" in capsys.readouterr().err


def test_fixed_length_examples_are_fully_labelled_and_train(training, tiny):
    from tutorial_lib.train import TrainConfig, train

    model, tokenizer = tiny
    examples = training.fixed_length_examples(tokenizer, length=16, count=6)
    assert len(examples) == 6
    assert all(len(ex["input_ids"]) == 16 and ex["labels"] == ex["input_ids"] for ex in examples)
    result = train(
        apply_method(model, "full"),
        examples,
        TrainConfig(steps=6, batch_size=2, lr=1e-2),
        pad_id=tokenizer.pad_token_id,
    )
    assert result.loss_history[-1] < result.loss_history[0]


def test_interleaving_reverses_the_order_every_other_repeat(training):
    order = []

    def timer(name):
        return lambda bench, method: order.append((name, method)) or name

    bench = SimpleNamespace(settle=lambda: order.append("settle"))
    runs = training.interleaved_runs(bench, {"a": timer("a"), "b": timer("b")}, repeats=3)
    called = [o for o in order if o != "settle"]
    assert [name for name, _ in called] == ["a", "b", "b", "a", "a", "b"]
    assert all(name == method for name, method in called)  # no method given: each its own name
    assert order.count("settle") == 6  # before every run
    assert runs == {"a": ["a"] * 3, "b": ["b"] * 3}
    order.clear()
    training.interleaved_runs(bench, {"x": timer("x")}, repeats=1, method="lora")
    assert order[-1] == ("x", "lora")


@pytest.mark.parametrize(
    "name, key, numerator, denominator",
    [
        ("lora_scratch", "lora_scratch_over_peft_step_time", "lora-scratch", "lora"),
        ("lora_vs_full", "lora_over_full_step_time", "lora", "full"),
    ],
)
def test_step_time_ratios_time_both_methods_on_the_same_shapes(
    run, tiny, name, key, numerator, denominator
):
    settings = replace(run.SETTINGS["quick"], step_lengths=(16,), batch_size=2)
    bench = run.Bench(settings, threads=torch.get_num_threads(), _base=tiny)
    result = run.MEASUREMENTS[name](bench)
    detail = result["detail"][f"{key}_16"]
    assert detail["shape"] == [2, 16]
    top, bottom = (detail[f"{m}_sec_per_step"]["values"] for m in (numerator, denominator))
    assert result[f"{key}_16"] == pytest.approx(top[0] / bottom[0])
    timed_steps = settings.train_steps - settings.warmup_skip - 1  # the last has no end mark
    assert [len(r) for r in detail["step_seconds"][numerator]] == [timed_steps]
    assert f"{key}_128" in run.TARGETS


def test_naive_scorer_agrees_with_the_library(probe, tiny, probe_items):
    model, tokenizer = tiny
    naive = probe.naive_choice_scores(model, tokenizer, probe_items)
    ours = probe.our_choice_scores(model, tokenizer, probe_items, batch_size=4)
    assert naive == [pytest.approx(row, abs=1e-4) for row in ours]
    result = evaluate_choices(model, tokenizer, probe_items, style="plain")
    assert probe.agreement(result, *probe.predictions(naive, probe_items)) == 1.0


def test_acc_norm_divides_by_characters_of_the_bare_choice(probe):
    items = [{"choices": ["ab", "abcd"]}]
    plain, norm = probe.predictions([[-3.0, -4.0]], items)
    assert plain == [0]  # -3 > -4
    assert norm == [1]  # -4/4 > -3/2: lm-eval's acc_norm, no leading space counted


def test_lm_eval_task_asks_exactly_our_plain_prompt(probe, tiny, probe_items, tmp_path):
    """The YAML, rendered the way lm-eval renders it (jinja2, StrictUndefined), gives our prompt."""
    import yaml
    from jinja2 import BaseLoader, Environment, StrictUndefined

    _, tokenizer = tiny
    config = yaml.safe_load(probe.write_lm_eval_task(probe_items, tmp_path).read_text())
    env = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    rows = data.read_jsonl(config["dataset_kwargs"]["data_files"]["test"], "probe")
    assert rows == probe_items
    for doc in rows:
        context, sep = question_prompt(tokenizer, doc["question"], "plain")
        assert env.from_string(config["doc_to_text"]).render(**doc) == context
        assert config["target_delimiter"] == sep
        assert doc[config["doc_to_target"]] == doc["answer"]


def test_lm_eval_builds_our_requests(probe, tiny, probe_items, tmp_path):
    """lm-eval itself, given the task, asks for (context, " " + choice) exactly as we score."""
    pytest.importorskip("lm_eval", reason="lm-eval is in the bench extra")
    import yaml
    from lm_eval.api.task import ConfigurableTask

    _, tokenizer = tiny
    config = yaml.safe_load(probe.write_lm_eval_task(probe_items, tmp_path).read_text())
    task = ConfigurableTask(config=config)
    for doc in task.test_docs():
        context, sep = question_prompt(tokenizer, doc["question"], "plain")
        requests = task.construct_requests(doc, task.doc_to_text(doc))
        assert [r.arguments for r in requests] == [(context, sep + c) for c in doc["choices"]]


def test_a_failing_measurement_is_recorded_and_the_others_still_run(run, tmp_path, monkeypatch):
    monkeypatch.setitem(run.MEASUREMENTS, "matmul", lambda b: 1 / 0)
    monkeypatch.setitem(
        run.MEASUREMENTS, "probe", lambda b: {"probe_eval_speedup": 2.5, "detail": {"items": 3}}
    )
    runner = run.Bench(run.SETTINGS["quick"], threads=torch.get_num_threads())
    run.run(["matmul", "probe"], runner, tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert "ZeroDivisionError" in saved["errors"]["matmul"]
    assert saved["probe_eval_speedup"] == 2.5
    assert saved["detail"]["probe"]["items"] == 3
    row = next(r for r in run.summary_table(saved).splitlines() if "probe_eval_speedup" in r)
    assert row.split()[-1] == "NO"  # 2.5 misses the >= 3 target


def test_packed_examples_are_fixed_length_and_keep_the_chats_labels(training, tiny_examples):
    packed = training.packed_examples(tiny_examples, 32)
    flat_ids = [t for ex in tiny_examples for t in ex["input_ids"]]
    flat_labels = [t for ex in tiny_examples for t in ex["labels"]]
    assert len(packed) == len(flat_ids) // 32
    assert all(len(ex["input_ids"]) == len(ex["labels"]) == 32 for ex in packed)
    assert [t for ex in packed for t in ex["input_ids"]] == flat_ids[: 32 * len(packed)]
    assert [t for ex in packed for t in ex["labels"]] == flat_labels[: 32 * len(packed)]
    everything = training.packed_examples(tiny_examples, 32, label_all=True)
    assert all(ex["labels"] == ex["input_ids"] for ex in everything)


def test_bf16_loss_gap_is_relative_to_fp32(training):
    gap = training.loss_gap(bf16=[2.2, 1.0, 0.55], fp32=[2.0, 1.0, 0.5])
    assert gap["bf16_max_step_loss_rel_diff"] == pytest.approx(0.1)
    assert gap["bf16_final_loss_rel_diff"] == pytest.approx(0.1)
    assert gap["bf16_mean_loss_rel_diff"] == pytest.approx(0.25 / 3.5)


def test_notebooks_are_timed_without_cached_sweep_runs(run, tmp_path):
    (tmp_path / "02_x_quick.jsonl").write_text("cached\n")
    (tmp_path / "02_x_full.jsonl").write_text("full\n")
    with run.without_cached_runs(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["02_x_full.jsonl"]
        (tmp_path / "02_x_quick.jsonl").write_text("written by the timed run\n")
    assert (tmp_path / "02_x_quick.jsonl").read_text() == "cached\n"
    assert (tmp_path / "02_x_full.jsonl").read_text() == "full\n"


# --- --lessons: every notebook top to bottom, in fresh kernels ---------------------------------

LESSON_CELL = """import os
from pathlib import Path
from tutorial_lib import stopwatch
stopwatch.add("training", {training})
stopwatch.add("evaluation", 0.25)
stopwatch.add("model_loading", 0.125)
assert os.environ["TUTORIAL_PROFILE"] == "quick"
assert not Path("runs/02_x_quick.jsonl").exists(), "the sweep cache was not set aside"
Path("runs").mkdir(exist_ok=True)
Path("runs/new_quick.jsonl").write_text("written by the timed run")
{extra}"""


def write_lessons(folder: Path, cells: dict[str, str]) -> dict[str, bytes]:
    """One-cell notebooks, as nbformat writes them; returns their bytes to compare with later."""
    import nbformat

    folder.mkdir()
    for name, cell in cells.items():
        nbformat.write(
            nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), folder / name
        )
    return {name: (folder / name).read_bytes() for name in cells}


@pytest.fixture
def lesson_dir(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """Two passing lessons, one failing, and a sweep cache from an earlier run."""
    folder = tmp_path / "nbs"
    cells = {
        "00_a.ipynb": LESSON_CELL.format(training=0.5, extra=""),
        "01_b.ipynb": LESSON_CELL.format(training=1.5, extra=""),
        "02_c.ipynb": LESSON_CELL.format(training=0.5, extra="1 / 0"),
    }
    originals = write_lessons(folder, cells)
    (folder / "runs").mkdir()
    (folder / "runs" / "02_x_quick.jsonl").write_text("cached\n")
    return folder, originals


def lessons_cli(folder: Path, out: Path, *more: str) -> list[str]:
    threads = str(torch.get_num_threads())
    return [
        "--lessons",
        "--profile",
        "quick",
        "--notebook-dir",
        str(folder),
        "--json",
        str(out),
    ] + ["--threads", threads, *more]


def test_lessons_are_timed_per_category_and_leave_everything_as_it_was(run, lesson_dir, tmp_path):
    folder, originals = lesson_dir
    out = tmp_path / "lessons.json"
    assert run.main(lessons_cli(folder, out, "--notebooks", "00,01")) == 0
    saved = json.loads(out.read_text())
    assert list(saved["lessons"]) == ["00_a", "01_b"]
    for name, training in (("00_a", 0.5), ("01_b", 1.5)):
        row = saved["lessons"][name]
        assert row["training_seconds"] == training
        assert (row["evaluation_seconds"], row["model_loading_seconds"]) == (0.25, 0.125)
        parts = ("training", "evaluation", "model_loading", "other")
        assert sum(row[f"{p}_seconds"] for p in parts) == pytest.approx(row["lesson_seconds"])
        assert (row["profile"], row["target_seconds"], row["error"]) == ("quick", 150, None)
        assert row["met"] == (row["lesson_seconds"] <= 150)
        assert 20 < row["kernel_peak_rss_mib"] < 4000  # a python kernel's high-water mark
    assert (folder / "runs" / "02_x_quick.jsonl").read_text() == "cached\n"
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["02_x_quick.jsonl"]
    assert {p.name: p.read_bytes() for p in folder.glob("*.ipynb")} == originals


SPIKE_THEN_MEASURE = """
import torch
from tutorial_lib.memory import PeakMemory
spike = bytearray(600 * 2**20)
spike[::4096] = b"x" * len(spike[::4096])
del spike
with PeakMemory(torch.device("cpu")):  # resets the kernel's high-water mark
    pass
"""


def test_a_lessons_peak_counts_what_a_library_measurement_erased(run, tmp_path):
    folder = tmp_path / "nbs"
    write_lessons(
        folder, {"00_a.ipynb": LESSON_CELL.format(training=0.5, extra=SPIKE_THEN_MEASURE)}
    )
    out = tmp_path / "lessons.json"
    assert run.main(lessons_cli(folder, out, "--notebooks", "00")) == 0
    assert json.loads(out.read_text())["lessons"]["00_a"]["kernel_peak_rss_mib"] > 600


def test_set_aside_keeps_what_the_run_wrote_where_asked_and_restores_the_cache(
    benchmarks, tmp_path
):
    runs, keep = tmp_path / "runs", tmp_path / "kept"
    runs.mkdir()
    keep.mkdir()
    (runs / "old.jsonl").write_text("cached\n")
    with benchmarks.lessons.set_aside(runs, keep_in=keep):
        assert not runs.exists()  # as on a fresh clone
        runs.mkdir()
        (runs / "new.jsonl").write_text("this run's sweep\n")
    assert [p.name for p in runs.iterdir()] == ["old.jsonl"]
    assert (keep / "runs" / "new.jsonl").read_text() == "this run's sweep\n"


def test_a_failing_lesson_is_recorded_and_only_passing_ones_are_saved_in_place(
    run, lesson_dir, tmp_path
):
    folder, originals = lesson_dir
    out = tmp_path / "lessons.json"
    assert run.main(lessons_cli(folder, out, "--notebooks", "00,02", "--inplace")) == 1
    saved = json.loads(out.read_text())
    assert "ZeroDivisionError" in saved["errors"]["02_c"]
    assert saved["lessons"]["02_c"]["met"] is False
    assert (folder / "02_c.ipynb").read_bytes() == originals["02_c.ipynb"]  # never overwritten
    executed = json.loads((folder / "00_a.ipynb").read_text())
    assert executed["cells"][0]["execution_count"] == 1
    assert (folder / "runs" / "02_x_quick.jsonl").read_text() == "cached\n"


def test_an_interrupted_lesson_run_keeps_its_json_and_restores_the_cache(
    benchmarks, lesson_dir, tmp_path, monkeypatch
):
    lessons, (folder, _) = benchmarks.lessons, lesson_dir
    calls = []

    def time_one(path, *args):
        calls.append(path.name)
        (folder / "runs").mkdir(exist_ok=True)  # a lesson writing its cache, then Ctrl-C
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"lesson_seconds": 1.0, "error": None}

    monkeypatch.setattr(lessons, "time_one", time_one)
    out = tmp_path / "lessons.json"
    paths = lessons.find_notebooks(folder)
    with pytest.raises(KeyboardInterrupt):
        lessons.run_lessons(paths, "full", 1, out, ran={})
    saved = json.loads(out.read_text())
    assert list(saved["lessons"]) == ["00_a"] and saved["interrupted"] == "01_b"
    assert (folder / "runs" / "02_x_quick.jsonl").read_text() == "cached\n"


def test_lesson_targets_and_picking(run, benchmarks, lesson_dir):
    lessons, (folder, _) = benchmarks.lessons, lesson_dir
    assert [
        lessons.target_seconds(Path(f"{n}_x.ipynb"), "full") for n in ("00", "01", "02", "07")
    ] == [1200, 1200, 2100, 1200]
    assert lessons.target_seconds(Path("02_x.ipynb"), "quick") == 150
    args = run.parse_args(
        ["--lessons", "--notebook-dir", str(folder), "--notebooks", "01", "--json", "x"]
    )
    assert [p.name for p in args.lesson_paths] == ["01_b.ipynb"] and args.profile == "full"
    for wrong in (
        ["--lessons", "--notebooks", "07"],
        ["--inplace"],
        ["--notebooks", "00"],
        ["--lessons", "--quick"],
    ):
        with pytest.raises(SystemExit):
            run.parse_args([*wrong, "--notebook-dir", str(folder), "--json", "x"])


def test_a_lesson_added_between_two_is_found_and_picked_by_its_own_number(benchmarks, tmp_path):
    """05b_lora_variants sits between 05 and 06 without renumbering them, and `--notebooks 05b`
    picks it alone."""
    lessons = benchmarks.lessons
    for name in ("05_lora.ipynb", "05b_lora_variants.ipynb", "06_qlora.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    found = lessons.find_notebooks(tmp_path)
    assert [p.name for p in found] == ["05_lora.ipynb", "05b_lora_variants.ipynb", "06_qlora.ipynb"]
    assert [lessons.lesson_number(p) for p in found] == ["05", "05b", "06"]
    assert [p.name for p in lessons.find_notebooks(tmp_path, ["05b"])] == [
        "05b_lora_variants.ipynb"
    ]
    assert lessons.target_seconds(found[1], "full") == 1200


def test_committed_results_name_no_machine_paths():
    """Results are shared: they say what ran, not where on someone's disk it lay."""
    import re

    local = re.compile(r"/(root|home|tmp|work|Users)/")
    for path in (Path(__file__).parent.parent / "benchmarks" / "results").glob("*.json"):
        assert not local.search(path.read_text()), path.name


def test_a_new_run_replaces_only_the_lessons_it_timed_without_error(benchmarks):
    committed = {
        "lessons": {"00_a": {"lesson_seconds": 1}, "01_b": {"lesson_seconds": 2}},
        "errors": {"01_b": "old failure"},
        "context_by_lesson": {"00_a": {"load_average_at_start": [9, 9, 9]}},
    }
    report = {
        "ran": {"command": "run.py --lessons"},
        "context": {"load_average_at_start": [0.1, 0.2, 0.3]},
        "lessons": {
            "01_b": {"lesson_seconds": 3, "error": None},
            "02_c": {"lesson_seconds": 4, "error": "Traceback"},
        },
    }
    assert benchmarks.lessons.merge_into(committed, report) == ["01_b"]
    assert committed["lessons"]["00_a"] == {"lesson_seconds": 1}  # not timed: kept
    assert committed["lessons"]["01_b"]["lesson_seconds"] == 3
    assert "02_c" not in committed["lessons"] and committed["errors"] == {}
    assert committed["context_by_lesson"]["01_b"]["ran"] == {"command": "run.py --lessons"}
    assert committed["context_by_lesson"]["00_a"] == {"load_average_at_start": [9, 9, 9]}
