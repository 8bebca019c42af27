"""The checkers of chapter 3 accept the reference solutions and name the typical mistakes."""

from __future__ import annotations

import torch

from lightm_edu.exercises import ch03
from lightm_edu.scan.linear import combine, linear_scan_log_depth, linear_scan_sequential


def message(feedback) -> str:
    return str(feedback).lower()


# ----------------------------------------------------------------------------------- combine


def solution_combine(left, right):
    a1, x1 = left
    a2, x2 = right
    return a2 * a1, a2 * x1 + x2


def test_combine_accepts_solution_and_reports_associativity():
    feedback = ch03.check_combine(solution_combine)
    assert feedback
    assert "associativity" in message(feedback) and "identity" in message(feedback)


def test_combine_accepts_package_combine():
    assert ch03.check_combine(combine)


def test_combine_placeholder_is_not_attempted():
    def placeholder(left, right):
        raise NotImplementedError  # your code here

    feedback = ch03.check_combine(placeholder)
    assert not feedback and "not attempted" in message(feedback)


def test_combine_ellipsis_is_not_attempted():
    assert "not attempted" in message(ch03.check_combine(...))


def test_combine_wrong_order_is_named():
    feedback = ch03.check_combine(lambda l, r: (l[0] * r[0], l[0] * r[1] + l[1]))
    assert not feedback and "opposite order" in message(feedback)


def test_combine_undecayed_input_is_named():
    feedback = ch03.check_combine(lambda l, r: (r[0] * l[0], l[1] + r[1]))
    assert not feedback and "not decayed" in message(feedback)


def test_combine_missing_second_input_is_named():
    feedback = ch03.check_combine(lambda l, r: (r[0] * l[0], r[0] * l[1]))
    assert not feedback and "x2" in message(feedback)


def test_combine_wrong_decay_is_named():
    feedback = ch03.check_combine(lambda l, r: (r[0] + l[0], r[0] * l[1] + r[1]))
    assert not feedback and "a (first element)" in message(feedback) and "a2 * a1" in message(feedback)


def test_combine_single_tensor_is_named():
    feedback = ch03.check_combine(lambda l, r: r[0] * l[1] + r[1])
    assert not feedback and "pair" in message(feedback)


def test_combine_exception_is_reported():
    feedback = ch03.check_combine(lambda l, r: l[0] @ r[2])
    assert not feedback and "indexerror" in message(feedback)


def test_combine_in_place_is_named():
    def in_place(left, right):
        a1, x1 = left
        a2, x2 = right
        x1.mul_(a2).add_(x2)
        return a2 * a1, x1

    feedback = ch03.check_combine(in_place)
    assert not feedback and "in place" in message(feedback)


def test_combine_returns_none_is_named():
    feedback = ch03.check_combine(lambda l, r: None)
    assert not feedback and "none" in message(feedback)


# ----------------------------------------------------------------------------------- log-depth scan


def solution_log_depth(a, x):
    length = x.shape[0]
    offset = 1
    while offset < length:
        a_new, x_new = combine((a[:-offset], x[:-offset]), (a[offset:], x[offset:]))
        a = torch.cat([a[:offset], a_new])
        x = torch.cat([x[:offset], x_new])
        offset *= 2
    return x


def test_log_depth_accepts_solution():
    assert ch03.check_log_depth_scan(solution_log_depth)


def test_log_depth_placeholder_is_not_attempted():
    def placeholder(a, x):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch03.check_log_depth_scan(placeholder))


def test_log_depth_too_few_rounds_is_named():
    def one_round_short(a, x):
        length = x.shape[0]
        offset = 1
        while 2 * offset < length:  # stops one round early
            a_new, x_new = combine((a[:-offset], x[:-offset]), (a[offset:], x[offset:]))
            a = torch.cat([a[:offset], a_new])
            x = torch.cat([x[:offset], x_new])
            offset *= 2
        return x

    feedback = ch03.check_log_depth_scan(one_round_short)
    assert not feedback and "round" in message(feedback) and "l = " in message(feedback)


def test_log_depth_exclusive_scan_is_named():
    def exclusive(a, x):
        h = solution_log_depth(a, x)
        return torch.cat([torch.zeros_like(h[:1]), h[:-1]])

    feedback = ch03.check_log_depth_scan(exclusive)
    assert not feedback and "exclusive" in message(feedback)


def test_log_depth_returning_decays_is_named():
    feedback = ch03.check_log_depth_scan(lambda a, x: torch.cumprod(a, dim=0))
    assert not feedback and "decays" in message(feedback)


def test_log_depth_returning_pair_is_named():
    feedback = ch03.check_log_depth_scan(lambda a, x: (a, solution_log_depth(a, x)))
    assert not feedback and "one tensor" in message(feedback)


def test_log_depth_wrong_shape_is_named():
    feedback = ch03.check_log_depth_scan(lambda a, x: solution_log_depth(a, x)[:, 0])
    assert not feedback and "shape" in message(feedback)


def test_log_depth_power_of_two_only_is_named():
    def powers_of_two_only(a, x):
        length = x.shape[0]
        offset = 1
        while offset < length:
            # wrong: drops the positions t < offset instead of keeping them
            a_new, x_new = combine((a[:-offset], x[:-offset]), (a[offset:], x[offset:]))
            a = torch.cat([a[:offset], a_new])
            x = torch.cat([x[:offset], x_new])
            offset *= 2
        if length & (length - 1):
            x = x + 1.0
        return x

    feedback = ch03.check_log_depth_scan(powers_of_two_only)
    assert not feedback and "powers of two" in message(feedback)


def test_log_depth_in_place_is_named():
    def overwrites(a, x):
        length = x.shape[0]
        offset = 1
        while offset < length:
            x[offset:] = a[offset:] * x[:-offset] + x[offset:]
            a[offset:] = a[offset:] * a[:-offset]
            offset *= 2
        return x

    feedback = ch03.check_log_depth_scan(overwrites)
    assert not feedback and "overwrote" in message(feedback)


def test_log_depth_exception_names_length():
    def fails_on_one(a, x):
        if x.shape[0] == 1:
            raise ValueError("no")
        return solution_log_depth(a, x)

    feedback = ch03.check_log_depth_scan(fails_on_one)
    assert not feedback and "valueerror" in message(feedback) and "l = 1" in message(feedback)


# ----------------------------------------------------------------------------------- carries


def solution_carries(local_last, decay_last):
    entering = torch.zeros_like(local_last)
    for k in range(1, local_last.shape[0]):
        entering[k] = decay_last[k - 1] * entering[k - 1] + local_last[k - 1]
    return entering


def test_chunk_summaries_reconstruct_the_scan():
    a = torch.rand(12, 3, dtype=torch.float64) * 0.5 + 0.5
    x = torch.randn(12, 3, dtype=torch.float64)
    local, decay = ch03.chunk_summaries(a, x, 4)
    assert local.shape == decay.shape == (3, 4, 3)
    h = (local + decay * solution_carries(local[:, -1], decay[:, -1]).unsqueeze(1)).reshape(12, 3)
    torch.testing.assert_close(h, linear_scan_sequential(a, x))


def test_carries_accepts_solution():
    feedback = ch03.check_carries(solution_carries)
    assert feedback and "pass 3" in message(feedback)


def test_carries_placeholder_is_not_attempted():
    def placeholder(local_last, decay_last):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch03.check_carries(placeholder))


def test_carries_leaving_state_is_named():
    def leaving(local_last, decay_last):
        out = torch.zeros_like(local_last)
        h = torch.zeros_like(local_last[0])
        for k in range(local_last.shape[0]):
            h = decay_last[k] * h + local_last[k]
            out[k] = h
        return out

    feedback = ch03.check_carries(leaving)
    assert not feedback and "leaving" in message(feedback)


def test_carries_forgot_decay_is_named():
    def undecayed(local_last, decay_last):
        entering = torch.zeros_like(local_last)
        for k in range(1, local_last.shape[0]):
            entering[k] = entering[k - 1] + local_last[k - 1]
        return entering

    feedback = ch03.check_carries(undecayed)
    assert not feedback and "not decayed" in message(feedback)


def test_carries_no_carry_is_named():
    def shifted(local_last, decay_last):
        return torch.cat([torch.zeros_like(local_last[:1]), local_last[:-1]])

    feedback = ch03.check_carries(shifted)
    assert not feedback and "only the previous chunk" in message(feedback)


def test_carries_nonzero_start_is_named():
    def starts_at_one(local_last, decay_last):
        return solution_carries(local_last, decay_last) + 1.0

    feedback = ch03.check_carries(starts_at_one)
    assert not feedback and "first chunk should be zero" in message(feedback)


def test_carries_wrong_shape_is_named():
    feedback = ch03.check_carries(lambda local_last, decay_last: solution_carries(local_last, decay_last)[1:])
    assert not feedback and "shape" in message(feedback)


def test_carries_exception_is_reported():
    feedback = ch03.check_carries(lambda local_last, decay_last: local_last[100])
    assert not feedback and "indexerror" in message(feedback)


# ----------------------------------------------------------------------------------- counting


def test_work_accepts_33():
    assert ch03.HILLIS_STEELE_LENGTH == 12
    assert ch03.check_hillis_steele_work(33)
    assert ch03.check_hillis_steele_work(33.0)


def test_work_placeholder_is_not_attempted():
    assert "not attempted" in message(ch03.check_hillis_steele_work(...))


def test_work_upper_bound_is_named():
    feedback = ch03.check_hillis_steele_work(48)
    assert not feedback and "log" in message(feedback)


def test_work_depth_is_named():
    feedback = ch03.check_hillis_steele_work(4)
    assert not feedback and "rounds" in message(feedback)


def test_work_sequential_is_named():
    feedback = ch03.check_hillis_steele_work(11)
    assert not feedback and "sequential" in message(feedback)


def test_work_missing_last_round_is_named():
    feedback = ch03.check_hillis_steele_work(29)
    assert not feedback and "last round" in message(feedback)


def test_work_off_by_one_is_named():
    feedback = ch03.check_hillis_steele_work(37)
    assert not feedback and "off by one" in message(feedback)


def test_work_not_a_number_is_named():
    feedback = ch03.check_hillis_steele_work("33")
    assert not feedback and "number" in message(feedback)


def test_work_other_wrong_number_gives_a_hint():
    feedback = ch03.check_hillis_steele_work(40)
    assert not feedback and "offset" in message(feedback)


def test_log_depth_unchanged_input_is_named():
    feedback = ch03.check_log_depth_scan(lambda a, x: x.clone())
    assert not feedback and "unchanged" in message(feedback)


def test_log_depth_stopping_early_names_the_rounds():
    def two_rounds(a, x):
        return linear_scan_log_depth(a, x, rounds=2)

    feedback = ch03.check_log_depth_scan(two_rounds)
    assert not feedback and "stops after 2 round(s)" in message(feedback)
