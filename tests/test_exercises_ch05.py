"""The checkers of chapter 5 accept the reference solutions and name the typical mistakes."""

from __future__ import annotations

import math

import torch

from lightm_edu.exercises import ch05
from lightm_edu.layers import flatten_tokens, unflatten_tokens


def message(feedback) -> str:
    return str(feedback).lower()


def placeholder(*args):
    raise NotImplementedError  # your code here


# ----------------------------------------------------------------------------------- flatten / unflatten


def solution_flatten(x):
    return x.flatten(2).transpose(1, 2)  # (b, c, d, h, w) -> (b, l, c)


def solution_unflatten(tokens, spatial):
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, *spatial)


def test_flatten_accepts_solution_and_reports_round_trip():
    feedback = ch05.check_flatten_3d(solution_flatten, solution_unflatten)
    assert feedback and "round trip" in message(feedback)


def test_flatten_accepts_package_functions():
    assert ch05.check_flatten_3d(flatten_tokens, unflatten_tokens)


def test_flatten_placeholders_are_not_attempted():
    assert "not attempted" in message(ch05.check_flatten_3d(placeholder, placeholder))
    assert "not attempted" in message(ch05.check_flatten_3d(..., ...))


def test_flatten_unflatten_placeholder_is_not_attempted():
    feedback = ch05.check_flatten_3d(solution_flatten, placeholder)
    assert not feedback and "not attempted" in message(feedback)


def test_flatten_channels_first_is_named():
    feedback = ch05.check_flatten_3d(lambda x: x.flatten(2), solution_unflatten)
    assert not feedback and "channels still come first" in message(feedback)


def test_flatten_plain_reshape_is_named_and_round_trip_noted():
    def reshape_flatten(x):
        b, c = x.shape[:2]
        return x.reshape(b, -1, c)

    def reshape_unflatten(tokens, spatial):
        return tokens.reshape(tokens.shape[0], tokens.shape[2], *spatial)

    feedback = ch05.check_flatten_3d(reshape_flatten, reshape_unflatten)
    assert not feedback and "reshaped" in message(feedback) and "transpose" in message(feedback)
    assert "undo each other" in message(feedback)


def test_flatten_column_major_is_named():
    feedback = ch05.check_flatten_3d(lambda x: x.permute(0, 1, 4, 3, 2).flatten(2).transpose(1, 2),
                                     solution_unflatten)
    assert not feedback and "(w, h, d)" in message(feedback) and "row-major" in message(feedback)


def test_flatten_swapped_axes_is_named():
    feedback = ch05.check_flatten_3d(lambda x: x.transpose(2, 3).flatten(2).transpose(1, 2),
                                     solution_unflatten)
    assert not feedback and "(h, d, w)" in message(feedback)


def test_flatten_in_place_is_named():
    def in_place(x):
        x.mul_(1.0).add_(1.0)
        return x.flatten(2).transpose(1, 2)

    feedback = ch05.check_flatten_3d(in_place, solution_unflatten)
    assert not feedback and "in place" in message(feedback)


def test_flatten_exception_names_shape():
    feedback = ch05.check_flatten_3d(lambda x: x.flatten(5), solution_unflatten)
    assert not feedback and "indexerror" in message(feedback) and "(2, 3, 2, 3, 4)" in message(feedback)


def test_unflatten_plain_reshape_is_named():
    feedback = ch05.check_flatten_3d(solution_flatten,
                                     lambda t, s: t.reshape(t.shape[0], t.shape[2], *s))
    assert not feedback and "reshaped (b, l, c)" in message(feedback)


def test_unflatten_channels_last_is_named():
    feedback = ch05.check_flatten_3d(solution_flatten, lambda t, s: t.reshape(t.shape[0], *s, t.shape[2]))
    assert not feedback and "channels last" in message(feedback)


def test_unflatten_wrong_axis_order_is_named():
    def column_major(tokens, spatial):
        b, _, c = tokens.shape
        d, h, w = spatial
        return tokens.transpose(1, 2).reshape(b, c, w, h, d).permute(0, 1, 4, 3, 2)

    feedback = ch05.check_flatten_3d(solution_flatten, column_major)
    assert not feedback and "(w, h, d)" in message(feedback)


def test_unflatten_returning_none_is_named():
    feedback = ch05.check_flatten_3d(solution_flatten, lambda t, s: None)
    assert not feedback and "none" in message(feedback)


# ----------------------------------------------------------------------------------- influence mask


def solution_mask(row, col, height, width):
    index = torch.arange(height * width).view(height, width)
    return index >= row * width + col


def test_mask_accepts_solution():
    feedback = ch05.check_influence_mask(solution_mask)
    assert feedback and "120 of the 256" in message(feedback)


def test_mask_accepts_numpy_and_integers():
    assert ch05.check_influence_mask(lambda r, c, h, w: solution_mask(r, c, h, w).int().numpy())


def test_mask_placeholder_is_not_attempted():
    assert "not attempted" in message(ch05.check_influence_mask(placeholder))


def test_mask_strict_inequality_is_named():
    def strict(row, col, height, width):
        return torch.arange(height * width).view(height, width) > row * width + col

    feedback = ch05.check_influence_mask(strict)
    assert not feedback and "own position is missing" in message(feedback)


def test_mask_reversed_is_named():
    def sees(row, col, height, width):
        return torch.arange(height * width).view(height, width) <= row * width + col

    feedback = ch05.check_influence_mask(sees)
    assert not feedback and "*see*" in message(feedback)


def test_mask_column_major_is_named():
    def column_major(row, col, height, width):
        index = torch.arange(height * width).view(width, height).t()
        return index >= col * height + row

    feedback = ch05.check_influence_mask(column_major)
    assert not feedback and "column-major" in message(feedback)


def test_mask_rest_of_row_is_named():
    def rest_of_row(row, col, height, width):
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[row, col:] = True
        return mask

    feedback = ch05.check_influence_mask(rest_of_row)
    assert not feedback and "rest of the pixel's own row" in message(feedback)


def test_mask_rectangle_is_named():
    def rectangle(row, col, height, width):
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[row:, col:] = True
        return mask

    feedback = ch05.check_influence_mask(rectangle)
    assert not feedback and "rectangle" in message(feedback)


def test_mask_swapped_row_and_column_is_named():
    def swapped(row, col, height, width):
        return torch.arange(height * width).view(height, width) >= col * width + row

    feedback = ch05.check_influence_mask(swapped)
    assert not feedback and "swapped" in message(feedback)


def test_mask_transposed_shape_is_named():
    feedback = ch05.check_influence_mask(lambda r, c, h, w: solution_mask(r, c, h, w).t().contiguous())
    assert not feedback and "(width, height)" in message(feedback)


def test_mask_non_boolean_values_are_named():
    feedback = ch05.check_influence_mask(lambda r, c, h, w: solution_mask(r, c, h, w) * 2.5)
    assert not feedback and "true/false" in message(feedback)


def test_mask_other_error_reports_a_position():
    def off_somewhere(row, col, height, width):
        mask = solution_mask(row, col, height, width)
        mask[-1, 0] = False
        return mask

    feedback = ch05.check_influence_mask(off_somewhere)
    assert not feedback and "differs at 1 of" in message(feedback) and "for example" in message(feedback)


# ----------------------------------------------------------------------------------- RVM forward


def solution_forward(layer, x):
    spatial = tuple(x.shape[2:])
    tokens = flatten_tokens(x)  # (b, l, c_in)
    y = layer.mixer(layer.norm(tokens), spatial) + layer.adjustment_factor * tokens
    return unflatten_tokens(layer.projection(layer.norm(y)), spatial)  # (b, c_out, *s)


def variant(no_residual=False, no_scale=False, normed_residual=False, no_second_norm=False,
            raw_mixer_input=False, no_projection=False, return_tokens=False):
    def forward(layer, x):
        spatial = tuple(x.shape[2:])
        tokens = flatten_tokens(x)
        mixed = layer.mixer(tokens if raw_mixer_input else layer.norm(tokens), spatial)
        residual = layer.norm(tokens) if normed_residual else tokens
        scale = 1.0 if no_scale else layer.adjustment_factor
        y = mixed if no_residual else mixed + scale * residual
        y = y if no_second_norm else layer.norm(y)
        out = y if no_projection else layer.projection(y)
        return out if return_tokens else unflatten_tokens(out, spatial)

    return forward


def test_forward_accepts_solution():
    assert ch05.check_rvm_forward(solution_forward)


def test_forward_accepts_calling_the_layer():
    assert ch05.check_rvm_forward(lambda layer, x: layer(x))


def test_forward_placeholder_is_not_attempted():
    assert "not attempted" in message(ch05.check_rvm_forward(placeholder))


def test_forward_missing_residual_is_named():
    feedback = ch05.check_rvm_forward(variant(no_residual=True))
    assert not feedback and "residual path s * x is missing" in message(feedback)


def test_forward_missing_scale_is_named():
    feedback = ch05.check_rvm_forward(variant(no_scale=True))
    assert not feedback and "adjustment factor s is missing" in message(feedback)


def test_forward_normalised_residual_is_named():
    feedback = ch05.check_rvm_forward(variant(normed_residual=True))
    assert not feedback and "normalised" in message(feedback)


def test_forward_missing_second_norm_is_named():
    feedback = ch05.check_rvm_forward(variant(no_second_norm=True))
    assert not feedback and "second layernorm is missing" in message(feedback)


def test_forward_raw_mixer_input_is_named():
    feedback = ch05.check_rvm_forward(variant(raw_mixer_input=True))
    assert not feedback and "raw tokens" in message(feedback)


def test_forward_missing_projection_is_caught():
    feedback = ch05.check_rvm_forward(variant(no_projection=True))
    assert not feedback and "shape" in message(feedback)


def test_forward_returning_tokens_is_named():
    feedback = ch05.check_rvm_forward(variant(return_tokens=True))
    assert not feedback and "returned the tokens" in message(feedback)


def test_forward_mixer_without_spatial_gets_hint():
    def no_spatial(layer, x):
        spatial = tuple(x.shape[2:])
        tokens = flatten_tokens(x)
        y = layer.mixer(layer.norm(tokens)) + layer.adjustment_factor * tokens
        return unflatten_tokens(layer.projection(layer.norm(y)), spatial)

    feedback = ch05.check_rvm_forward(no_spatial)
    assert not feedback and "typeerror" in message(feedback)
    assert "layer.mixer(tokens, spatial)" in message(feedback) and "a volume" in message(feedback)


def test_forward_checker_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch05.check_rvm_forward(solution_forward)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------------- parameter count


def solution_count(c_in, c_out):
    d_inner, rank = 2 * c_in, math.ceil(c_in / 16)
    mamba = (c_in * 2 * d_inner            # in_proj
             + d_inner * 4 + d_inner       # conv1d (width 4) with bias
             + d_inner * (rank + 2 * 16)   # x_proj
             + rank * d_inner + d_inner    # dt_proj with bias
             + d_inner * 16 + d_inner      # A_log, D
             + d_inner * c_in)             # out_proj
    return mamba + 2 * c_in + c_in * c_out + c_out + 1


def test_count_accepts_solution():
    feedback = ch05.check_rvm_parameter_count(solution_count)
    assert feedback and "11,041" in message(feedback)


def test_count_placeholder_is_not_attempted():
    assert "not attempted" in message(ch05.check_rvm_parameter_count(placeholder))


def test_count_layernorm_twice_is_named():
    feedback = ch05.check_rvm_parameter_count(lambda i, o: solution_count(i, o) + 2 * i)
    assert not feedback and "layernorm twice" in message(feedback)


def test_count_missing_scale_is_named():
    feedback = ch05.check_rvm_parameter_count(lambda i, o: solution_count(i, o) - 1)
    assert not feedback and "adjustment factor" in message(feedback)


def test_count_missing_bias_is_named():
    feedback = ch05.check_rvm_parameter_count(lambda i, o: solution_count(i, o) - o)
    assert not feedback and "bias of the projection" in message(feedback)


def test_count_dt_rank_without_ceiling_is_named():
    def no_ceiling(c_in, c_out):
        return solution_count(c_in, c_out) - 4 * c_in * math.ceil(c_in / 16) + 4 * c_in * (c_in / 16)

    feedback = ch05.check_rvm_parameter_count(no_ceiling)
    assert not feedback and "dt_rank" in message(feedback) and "c_in = 20" in message(feedback)


def test_count_other_error_gives_breakdown_hint():
    feedback = ch05.check_rvm_parameter_count(lambda i, o: solution_count(i, o) + 7)
    assert not feedback and "fewer" in message(feedback) and "mixer.parameters()" in message(feedback)


def test_count_non_number_is_named():
    feedback = ch05.check_rvm_parameter_count(lambda i, o: "11041")
    assert not feedback and "expected a number" in message(feedback)
