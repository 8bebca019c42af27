"""The shared building blocks of the exercise checkers."""

import torch

from lightm_edu.exercises import Feedback, call_learner, compare_tensors, not_attempted


def test_error_inside_torch_points_at_the_learners_line():
    def learner(x):
        weights = torch.zeros(3, 5)
        return torch.nn.functional.linear(x, weights)  # the faulty line

    result, failure = call_learner(learner, torch.zeros(2, 4))
    assert result is None and failure is not None and not failure
    assert "RuntimeError" in failure.title
    assert "return torch.nn.functional.linear(x, weights)" in failure.title


def test_placeholder_and_missing_return_are_recognised():
    def placeholder(x):
        raise NotImplementedError

    assert call_learner(placeholder, 1)[1].title.startswith("Not attempted yet")
    assert "forget a `return`" in call_learner(lambda x: None, 1)[1].details[0]
    assert "Expected a function" in call_learner(3, 1)[1].title


def test_compare_tensors_reports_shape_and_worst_index():
    expected = torch.zeros(2, 3)
    assert compare_tensors(expected.clone(), expected) is None
    assert "shape (3, 2), expected (2, 3)" in compare_tensors(torch.zeros(3, 2), expected).title
    got = expected.clone()
    got[1, 2] = 0.5
    feedback = compare_tensors(got, expected, "y")
    assert isinstance(feedback, Feedback) and "index (1, 2)" in feedback.details[0]
    assert not not_attempted()


def test_as_number_takes_numbers_and_one_element_tensors_only():
    import numpy as np
    import torch

    from lightm_edu.exercises._checking import as_number

    for value, expected in ((3, 3.0), (2.5, 2.5), (np.float32(0.25), 0.25), (np.int64(7), 7.0),
                            (torch.tensor(1.5), 1.5), (torch.tensor([4]), 4.0), (np.array([0.5]), 0.5)):
        got = as_number(value)
        assert got == expected and type(got) is float, value
    for value in (True, np.bool_(False), torch.tensor(True), torch.tensor([1.0, 2.0]), np.zeros(3), "1.0", None,
                  [1.0], object()):
        assert as_number(value) is None, value
