"""The Baseline is where a run happens; the spec says what it does."""

import pytest

from tutorial_lib.experiment import run_experiment


@pytest.mark.parametrize("keyword", ["profile", "model_name", "suite", "before"])
def test_the_old_where_keywords_point_at_the_baseline(keyword):
    with pytest.raises(
        TypeError, match=rf"{keyword} say where a run happens: give them to a Baseline"
    ):
        run_experiment("lora", steps=1, **{keyword: None})
