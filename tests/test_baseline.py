"""The Baseline is where a run happens; the spec says what it does."""

import pytest

from tutorial_lib.experiment import run_experiment


@pytest.mark.parametrize("keyword", ["profile", "model_name", "suite", "before"])
def test_the_old_where_keywords_point_at_the_baseline(keyword):
    with pytest.raises(
        TypeError, match=rf"{keyword} say where a run happens: give them to a Baseline"
    ):
        run_experiment("lora", steps=1, **{keyword: None})


def test_a_run_reports_kl_to_the_base_from_logprobs_captured_once(tiny_folder, profile_with):
    from tutorial_lib.baseline import Baseline

    baseline = Baseline(profile_with(general_items=3, kl_passages=2), tiny_folder)
    result = run_experiment("full", baseline, steps=2, lr=1e-2)
    captured = baseline.base_logprobs
    assert captured is not None and len(captured.ids) == 2
    assert "base_logprobs" not in repr(baseline)  # held, not printed nor compared
    s = result.summary()
    assert s["kl_n_passages"] == 2 and s["kl_to_base"] > 0 and s["kl_to_base_stderr"] is not None
    assert s["general_n_passages"] == 3 and s["general_ce_change_stderr"] is not None
    assert s["general_ce_change"] == pytest.approx(s["general_ce_after"] - s["general_ce_before"])
    assert result.before.general_passages.kl_sums is None  # the base is not compared to itself
    run_experiment("lora", baseline, steps=1)
    assert baseline.base_logprobs is captured  # measured once, shared by every run


def test_without_kl_passages_kl_is_absent_not_made_up(tiny_folder, profile_with):
    from tutorial_lib.baseline import Baseline

    baseline = Baseline(profile_with(general_items=1, kl_passages=0), tiny_folder)
    s = run_experiment("full", baseline, steps=1, lr=1e-2).summary()
    assert baseline.base_logprobs is None
    assert (s["kl_to_base"], s["kl_to_base_stderr"], s["kl_n_passages"]) == (None, None, 0)
    assert s["general_n_passages"] == 1 and s["general_ce_change_stderr"] is None
    assert s["general_ce_change_ci95"] is None
