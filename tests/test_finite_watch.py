import pytest
import torch

from spectral_ssl.finite_watch import FiniteWatch, NonFiniteError


def test_finite_watch_reports_the_first_bad_step():
    watch = FiniteWatch(torch.device("cpu"))
    watch.record(0, torch.tensor(1.0), torch.tensor(2.0))
    watch.check()  # nothing yet
    watch.record(1, torch.tensor(1.0), torch.tensor(float("inf")))
    watch.record(2, torch.tensor(float("nan")), torch.tensor(float("nan")))
    with pytest.raises(NonFiniteError, match=r"non-finite gradients at step 1 \(no checkpoint holds them\)") as err:
        watch.check()
    assert (err.value.step, err.value.kind) == (1, "gradients")
    watch = FiniteWatch(torch.device("cpu"))
    watch.record(4, torch.tensor(float("nan")), torch.tensor(float("nan")))
    with pytest.raises(NonFiniteError, match="non-finite loss at step 4; lower --lr") as err:
        watch.check()
    assert (err.value.step, err.value.kind) == (4, "loss")


def test_a_later_bad_step_does_not_replace_the_first():
    watch = FiniteWatch(torch.device("cpu"))
    watch.record(3, torch.tensor(float("inf")), torch.tensor(1.0))
    watch.record(7, torch.tensor(float("nan")), torch.tensor(float("nan")))
    with pytest.raises(NonFiniteError, match="non-finite loss at step 3"):
        watch.check()
