"""The checkers of chapter 6 accept the reference solutions and name the typical mistakes."""

from __future__ import annotations

from lightm_edu.exercises import ch06


def message(feedback) -> str:
    return str(feedback).lower()


# ----------------------------------------------------------------------------------- encoder shapes


def solution_encoder_shapes(input_shape, init_filters):
    b, _, *spatial = input_shape
    return [(b, init_filters * 2 ** i, *(s // 2 ** i for s in spatial)) for i in range(4)]


def test_encoder_shapes_accepts_solution():
    feedback = ch06.check_encoder_shapes(solution_encoder_shapes)
    assert feedback, str(feedback)


def test_encoder_shapes_match_the_model_by_construction():
    for input_shape, init_filters in ch06.ENCODER_SHAPE_CASES:
        assert (ch06.encoder_shapes_by_running(input_shape, init_filters)
                == solution_encoder_shapes(input_shape, init_filters))


def test_encoder_shapes_placeholder_is_not_attempted():
    def placeholder(input_shape, init_filters):
        raise NotImplementedError  # your code here

    feedback = ch06.check_encoder_shapes(placeholder)
    assert not feedback and "not attempted" in message(feedback)


def test_encoder_shapes_one_pooling_too_many_is_named():
    def too_many(input_shape, init_filters):
        b, _, *spatial = input_shape
        return [(b, init_filters * 2 ** i, *(s // 2 ** (i + 1) for s in spatial)) for i in range(4)]

    feedback = ch06.check_encoder_shapes(too_many)
    assert not feedback and "stage 0" in message(feedback) and "once too often" in message(feedback)


def test_encoder_shapes_channels_one_doubling_ahead_is_named():
    def ahead(input_shape, init_filters):
        b, _, *spatial = input_shape
        return [(b, init_filters * 2 ** (i + 1), *(s // 2 ** i for s in spatial)) for i in range(4)]

    feedback = ch06.check_encoder_shapes(ahead)
    assert not feedback and "one doubling ahead" in message(feedback)


def test_encoder_shapes_missing_batch_axis_is_named():
    def no_batch(input_shape, init_filters):
        return [shape[1:] for shape in solution_encoder_shapes(input_shape, init_filters)]

    feedback = ch06.check_encoder_shapes(no_batch)
    assert not feedback and "without the batch axis" in message(feedback)


def test_encoder_shapes_wrong_number_of_stages_is_named():
    feedback = ch06.check_encoder_shapes(lambda s, f: solution_encoder_shapes(s, f)[:3])
    assert not feedback and "4 stages" in message(feedback)


def test_encoder_shapes_single_shape_is_named():
    feedback = ch06.check_encoder_shapes(lambda s, f: (1, 256, 8, 8))
    assert not feedback and "list of 4 shapes" in message(feedback)


def test_encoder_shapes_float_sizes_are_named():
    def floats(input_shape, init_filters):
        b, _, *spatial = input_shape
        return [(b, init_filters * 2 ** i, *(s / 2 ** i + 0.5 for s in spatial)) for i in range(4)]

    feedback = ch06.check_encoder_shapes(floats)
    assert not feedback and "whole numbers" in message(feedback)


def test_encoder_shapes_exception_is_reported():
    feedback = ch06.check_encoder_shapes(lambda s, f: [s[7]])
    assert not feedback and "indexerror" in message(feedback) and "case input_shape" in message(feedback)


# ----------------------------------------------------------------------------------- RVM count


def solution_rvm_count(blocks_down, blocks_up):
    return 2 * sum(blocks_down) + len(blocks_down) - 1


def test_rvm_count_accepts_solution_and_reports_21():
    feedback = ch06.check_rvm_count(solution_rvm_count)
    assert feedback and "21" in message(feedback)


def test_rvm_count_matches_building_the_model():
    for blocks_down, blocks_up in ch06.RVM_COUNT_CASES:
        assert ch06.rvm_count_by_building(blocks_down, blocks_up) == solution_rvm_count(blocks_down, blocks_up)


def test_rvm_count_without_downsampling_layers_is_named():
    feedback = ch06.check_rvm_count(lambda down, up: 2 * sum(down))
    assert not feedback and "downsampling" in message(feedback) and "building the model gives 21" in message(feedback)


def test_rvm_count_one_per_block_is_named():
    feedback = ch06.check_rvm_count(lambda down, up: sum(down) + len(down) - 1)
    assert not feedback and "two rvm layers" in message(feedback)


def test_rvm_count_stage_zero_downsampling_is_named():
    feedback = ch06.check_rvm_count(lambda down, up: 2 * sum(down) + len(down))
    assert not feedback and "stage 0" in message(feedback)


def test_rvm_count_decoder_counted_is_named():
    feedback = ch06.check_rvm_count(lambda down, up: 2 * sum(down) + len(down) - 1 + 2 * sum(up))
    assert not feedback and "decoder" in message(feedback)


def test_rvm_count_non_number_is_named():
    feedback = ch06.check_rvm_count(lambda down, up: "21")
    assert not feedback and "whole number" in message(feedback)


def test_rvm_count_placeholder_is_not_attempted():
    def placeholder(blocks_down, blocks_up):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch06.check_rvm_count(placeholder))


# ----------------------------------------------------------------------------------- names


SOLUTION_NAMES = {
    "down_layers.3.4.conv1.skip_scale": "encoder.3.blocks.3.rvm1.adjustment_factor",
    "down_layers.1.0.0.mamba.A_log": "encoder.1.downsample.mixer.A_log",
    "up_samples.2.0.conv.weight": "decoder.2.reduce.weight",
    "up_layers.0.0.conv.1.conv.weight": "decoder.0.blocks.0.conv.pointwise.weight",
}


def test_names_accepts_solution():
    assert set(SOLUTION_NAMES) == set(ch06.OFFICIAL_KEYS)
    feedback = ch06.check_our_names(SOLUTION_NAMES)
    assert feedback, str(feedback)


def test_names_solution_agrees_with_official_key_map():
    from lightm_edu.model import LightMUNet

    key_map = LightMUNet(2, 1, 2).official_key_map()
    for official, ours in SOLUTION_NAMES.items():
        assert key_map[ours] == official


def test_names_placeholder_is_not_attempted():
    assert "not attempted" in message(ch06.check_our_names(...))
    assert "not attempted" in message(ch06.check_our_names({k: ... for k in ch06.OFFICIAL_KEYS}))


def test_names_block_index_off_by_one_is_named():
    answer = {**SOLUTION_NAMES, "down_layers.3.4.conv1.skip_scale": "encoder.3.blocks.4.rvm1.adjustment_factor"}
    feedback = ch06.check_our_names(answer)
    assert not feedback and "1 of 4" in message(feedback) and "blocks.(j-1)" in message(feedback)


def test_names_inner_renames_forgotten_are_named():
    answer = {**SOLUTION_NAMES, "down_layers.1.0.0.mamba.A_log": "encoder.1.downsample.mamba.A_log"}
    feedback = ch06.check_our_names(answer)
    assert not feedback and "mamba -> mixer" in message(feedback)


def test_names_partly_filled_says_which():
    answer = {**SOLUTION_NAMES, "up_samples.2.0.conv.weight": ...}
    feedback = ch06.check_our_names(answer)
    assert not feedback and "up_samples.2.0.conv.weight: not filled in" in message(feedback)


def test_names_not_a_dict_is_named():
    feedback = ch06.check_our_names(["encoder.3.blocks.3.rvm1.adjustment_factor"])
    assert not feedback and "dict" in message(feedback)


# ----------------------------------------------------------------------------------- padded size


def solution_padded_size(size, multiple):
    return tuple(s + (-s) % multiple for s in size)


def test_padded_size_accepts_solution():
    assert ch06.check_padded_size(solution_padded_size)


def test_padded_size_extra_multiple_is_named():
    feedback = ch06.check_padded_size(lambda size, m: tuple(s + m - s % m for s in size))
    assert not feedback and "already multiples" in message(feedback)


def test_padded_size_rounding_down_is_named():
    feedback = ch06.check_padded_size(lambda size, m: tuple(s // m * m for s in size))
    assert not feedback and "rounded down" in message(feedback)


def test_padded_size_padding_instead_of_size_is_named():
    feedback = ch06.check_padded_size(lambda size, m: tuple((-s) % m for s in size))
    assert not feedback and "padding per axis" in message(feedback)


def test_padded_size_wrong_type_is_named():
    feedback = ch06.check_padded_size(lambda size, m: "32x32")
    assert not feedback and "tuple of whole numbers" in message(feedback)


def test_padded_size_placeholder_is_not_attempted():
    def placeholder(size, multiple):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch06.check_padded_size(placeholder))
