"""Checkers for the exercises of chapter 5, "From images to sequences: the RVM layer".

Each checker takes the learner's answer, compares it with :mod:`lightm_edu.layers`, and returns a
:class:`~lightm_edu.exercises.Feedback` (truthy when correct) that says what is wrong and gives a
hint. None of them raises on a wrong or missing answer.

    check_flatten_3d(flatten, unflatten)   exercise 1: (b, c, d, h, w) <-> (b, l, c), row-major
    check_influence_mask(fn)               exercise 2: the outputs one pixel can influence in a
                                           causal row-major scan, as an (h, w) boolean mask
    check_rvm_forward(fn)                  exercise 3: the RVM layer's forward from its submodules
    check_rvm_parameter_count(fn)          exercise 4: the parameters of RVMLayer(d, c_in, c_out)
"""

from __future__ import annotations

import itertools
import math
import numbers

import torch

from ..layers import RVMLayer, flatten_tokens, unflatten_tokens
from ._checking import Feedback, call_learner, compare_tensors, correct, in_case, not_attempted, wrong

__all__ = ["check_flatten_3d", "check_influence_mask", "check_rvm_forward", "check_rvm_parameter_count"]

_AXES = "dhw"  # names of the three spatial axes of a volume, slowest to fastest in row-major order


def _same(got, expected) -> bool:
    """True when ``got`` is a tensor with the shape and (almost) the values of ``expected``."""
    return (isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(expected.shape)
            and torch.allclose(got.detach().to(expected.dtype), expected, rtol=1e-5, atol=1e-7))


# ------------------------------------------------------------------------------------ exercise 1


def _spatial_orders(x: torch.Tensor):
    """(order name, tokens) for every order of the three spatial axes of x (b, c, d, h, w) other
    than row-major: e.g. "w, h, d" flattens with d fastest (column-major)."""
    for perm in itertools.permutations(range(3)):
        if perm == (0, 1, 2):
            continue
        permuted = x.permute(0, 1, *(2 + p for p in perm))  # (b, c, s_perm...)
        yield ", ".join(_AXES[p] for p in perm), permuted.flatten(2).transpose(1, 2)


def _check_flatten(flatten, x) -> Feedback | None:
    b, c, *spatial = x.shape
    length = math.prod(spatial)
    case = f"Input x of shape {tuple(x.shape)} = (b, c, d, h, w)."
    original = x.clone()
    got, problem = call_learner(flatten, x)
    if problem is not None:
        return in_case(problem, case)
    if not torch.equal(x, original):
        return wrong("Your flatten changed its input in place.", case,
                     "Build the tokens from x without assigning into it.")
    expected = flatten_tokens(original)
    if not isinstance(got, torch.Tensor):
        return wrong(f"flatten should return a tensor, got {type(got).__name__}.", case)
    if tuple(got.shape) == (b, c, length):
        return wrong(f"flatten returned shape {tuple(got.shape)} = (b, c, l): channels still come first.",
                     case, "Tokens are (b, l, c): one row per position, one column per channel. "
                           "Swap the last two axes with .transpose(1, 2).")
    if tuple(got.shape) == (b, length * c) or tuple(got.shape) == (b * length, c):
        return wrong(f"flatten returned shape {tuple(got.shape)}: the batch, token and channel axes "
                     f"must stay separate, (b, l, c) = {(b, length, c)}.", case)
    if tuple(got.shape) == tuple(expected.shape) and not _same(got, expected):
        got = got.detach().to(expected.dtype)
        if _same(got, original.reshape(b, length, c)):
            return wrong("You reshaped (b, c, d, h, w) straight into (b, l, c).", case,
                         "reshape keeps the memory order, in which all positions of channel 0 come "
                         "first: the 'tokens' then mix channels and positions. Flatten the spatial "
                         "axes into (b, c, l) first, then transpose to (b, l, c).")
        for order, tokens in _spatial_orders(original):
            if _same(got, tokens):
                fastest = order.split(", ")[-1]
                return wrong(f"Your tokens run through the spatial axes in the order ({order}), "
                             f"with {fastest} fastest.", case,
                             "Row-major order: the last axis (w) changes fastest, then h, then d "
                             "(slice by slice, row by row, like reading a book). Keep the axes "
                             "in their order: x.flatten(2) does exactly that.")
    return compare_tensors(got, expected, "flatten(x)",
                           hint="Token t = (i * h + j) * w + k holds x[:, :, i, j, k] (all channels).")


def _check_unflatten(unflatten, tokens, spatial) -> Feedback | None:
    b, length, c = tokens.shape
    case = f"Tokens of shape {tuple(tokens.shape)} = (b, l, c), spatial = {spatial} = (d, h, w)."
    original = tokens.clone()
    got, problem = call_learner(unflatten, tokens, spatial)
    if problem is not None:
        return in_case(problem, case)
    if not torch.equal(tokens, original):
        return wrong("Your unflatten changed its input in place.", case)
    expected = unflatten_tokens(original, spatial)
    if not isinstance(got, torch.Tensor):
        return wrong(f"unflatten should return a tensor, got {type(got).__name__}.", case)
    if tuple(got.shape) == (b, *spatial, c):
        return wrong(f"unflatten returned shape {tuple(got.shape)} = (b, d, h, w, c): channels last.",
                     case, "Feature maps are channels-first, (b, c, d, h, w): transpose the tokens "
                           "to (b, c, l) before reshaping.")
    if tuple(got.shape) == tuple(expected.shape) and not _same(got, expected):
        got = got.detach().to(expected.dtype)
        if _same(got, original.reshape(b, c, *spatial)):
            return wrong("You reshaped (b, l, c) straight into (b, c, d, h, w).", case,
                         "That reads the token values in memory order, position by position, and "
                         "pours them into channel 0 first. Transpose to (b, c, l) first, then reshape.")
        for order, _ in _spatial_orders(expected):
            perm = [_AXES.index(a) for a in order.split(", ")]
            sizes = [spatial[p] for p in perm]
            candidate = original.transpose(1, 2).reshape(b, c, *sizes).permute(
                0, 1, *(2 + perm.index(k) for k in range(3)))
            if _same(got, candidate):
                return wrong(f"Your unflatten reads the tokens as if ({order}) were the order of the "
                             "axes.", case, "Row-major: w fastest, then h, then d. Reshape (b, c, l) "
                                            "to (b, c, d, h, w) in one go.")
    return compare_tensors(got, expected, "unflatten(tokens, spatial)",
                           hint="unflatten must undo flatten: unflatten(flatten(x), x.shape[2:]) == x.")


def check_flatten_3d(flatten, unflatten) -> Feedback:
    """Check ``flatten(x)`` and ``unflatten(tokens, spatial)`` for volumes.

    ``flatten``: (b, c, d, h, w) -> (b, l, c) with l = d h w, row-major (w fastest);
    ``unflatten``: (b, l, c) and spatial = (d, h, w) -> (b, c, d, h, w). Both are compared with
    :func:`lightm_edu.layers.flatten_tokens` and :func:`~lightm_edu.layers.unflatten_tokens` on
    volumes whose sizes all differ (so that swapped axes show), and the round trips
    ``unflatten(flatten(x))`` and ``flatten(unflatten(t))`` must give back their inputs exactly.
    """
    if flatten is None or flatten is Ellipsis or unflatten is None or unflatten is Ellipsis:
        return not_attempted("both functions")
    g = torch.Generator().manual_seed(5)
    shapes = [(2, 3, 2, 3, 4), (1, 5, 4, 1, 3)]
    for shape in shapes:
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        problem = _check_flatten(flatten, x)
        if problem is not None:
            return _pair_hint(problem, flatten, unflatten, x)
    for shape in shapes:
        b, c, *spatial = shape
        tokens = torch.randn(b, math.prod(spatial), c, generator=g, dtype=torch.float64)
        problem = _check_unflatten(unflatten, tokens, tuple(spatial))
        if problem is not None:
            return problem
    for shape in shapes:
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        back = unflatten(flatten(x), tuple(shape[2:]))
        tokens = flatten_tokens(x)
        again = flatten(unflatten(tokens, tuple(shape[2:])))
        if not (torch.equal(back, x) and torch.equal(again, tokens)):
            return wrong("Each function matches the package, but a round trip does not give the input "
                         "back exactly.", f"Shape {shape}.",
                         "Avoid arithmetic on the values: flatten and unflatten only move them.")
    return correct("Correct: your flatten and unflatten match the package, for volumes of shapes "
                   f"{shapes[0]} and {shapes[1]}.",
                   "Round trips unflatten(flatten(x)) == x and flatten(unflatten(t)) == t hold exactly.",
                   "Token t = (i * h + j) * w + k holds voxel (i, j, k): slice by slice, row by row.")


def _pair_hint(problem: Feedback, flatten, unflatten, x) -> Feedback:
    """Add a remark when the learner's pair round-trips even though the order is wrong."""
    try:
        back = unflatten(flatten(x.clone()), tuple(x.shape[2:]))
        if isinstance(back, torch.Tensor) and torch.equal(back.detach().to(x.dtype), x):
            problem.details.append("Your two functions undo each other (the round trip works), but the "
                                   "token order must also be the package's: other layers and the "
                                   "official weights rely on it.")
    except Exception:
        pass
    return problem


# ------------------------------------------------------------------------------------ exercise 2


def _token_index(height: int, width: int) -> torch.Tensor:
    """The token index of every position of an (h, w) map, via the package's unflatten_tokens."""
    order = torch.arange(height * width, dtype=torch.float64).view(1, -1, 1)  # (1, l, 1)
    return unflatten_tokens(order, (height, width))[0, 0].long()  # (h, w)


def _as_mask(value, shape):
    """The learner's mask as a bool tensor, or a Feedback saying why it is not one."""
    try:
        mask = torch.as_tensor(value)
    except Exception:
        return None, wrong(f"Expected a boolean tensor of shape {shape}, got {type(value).__name__}.",
                           "Return e.g. a comparison of index tensors, such as `index >= t`.")
    if tuple(mask.shape) != tuple(shape):
        extra = ("" if tuple(mask.shape) != tuple(shape)[::-1] else
                 " That is (width, height): the first axis is the row (height).")
        return None, wrong(f"The mask has shape {tuple(mask.shape)}, "
                           f"expected (height, width) = {shape}.{extra}")
    if mask.dtype != torch.bool:
        if not torch.isin(mask.double(), torch.tensor([0.0, 1.0], dtype=torch.float64)).all():
            return None, wrong("The mask should hold True/False (or 0/1) values only.",
                               f"Found values such as {mask.flatten()[:4].tolist()}.")
        mask = mask.bool()
    return mask, None


def check_influence_mask(fn) -> Feedback:
    """Check ``fn(row, col, height, width)``: a boolean (height, width) mask that is True at every
    output position that input pixel ``(row, col)`` can influence in one causal scan over the
    row-major token order (one RVM layer): the positions whose token index is at least the pixel's.

    Checked on several grids and pixels (corners included); the usual mistakes (the pixel itself
    left out, the mask reversed, column-major order, only the rest of the row, the lower-right
    rectangle, row and column swapped) are named.
    """
    cases = [(2, 3, 5, 7), (0, 0, 4, 4), (3, 3, 4, 4), (1, 4, 3, 6), (4, 0, 6, 5), (8, 8, 16, 16)]
    for row, col, height, width in cases:
        case = f"Pixel (row, col) = ({row}, {col}) on a grid of height {height} and width {width}."
        got, problem = call_learner(fn, row, col, height, width)
        if problem is not None:
            return in_case(problem, case)
        mask, problem = _as_mask(got, (height, width))
        if problem is not None:
            return in_case(problem, case)
        index = _token_index(height, width)  # (h, w)
        t = int(index[row, col])
        expected = index >= t
        if torch.equal(mask, expected):
            continue
        rows = torch.arange(height).view(-1, 1).expand(height, width)
        cols = torch.arange(width).view(1, -1).expand(height, width)
        column_major = cols * height + rows
        named = [
            (index > t, "The pixel's own position is missing.",
             "The output at the pixel's own token depends on its input (through the residual s x, "
             "the D term and the convolution): use >=, not >."),
            (index <= t, "This mask marks the positions the pixel can *see*, not those it influences.",
             "A causal scan carries information forward: pixel t influences the outputs t, t+1, ..., l-1."),
            (index < t, "This mask marks the positions before the pixel (what it can see, without itself).",
             "A causal scan carries information forward: pixel t influences the outputs t, t+1, ..., l-1."),
            (column_major >= col * height + row, "This is the column-major order (down each column first).",
             "Row-major: token t = row * width + col; the column index changes fastest."),
            ((rows == row) & (cols >= col), "You marked only the rest of the pixel's own row.",
             "After the end of its row the scan goes on through every later row, so all of them are "
             "influenced as well."),
            ((rows >= row) & (cols >= col), "You marked the rectangle below and to the right of the pixel.",
             "The token order is row-major: every later row is influenced in full, including the "
             "columns to the left of `col`."),
        ]
        if row < width and col < height:
            swapped = _token_index(height, width) >= (col * width + row)
            named.append((swapped, "Row and column are swapped.",
                          "The token index of (row, col) is row * width + col."))
        for candidate, title, hint in named:
            if torch.equal(mask, candidate) and not torch.equal(candidate, expected):
                return wrong(title, case, hint)
        differ = (mask != expected).nonzero()
        r, c = (int(v) for v in differ[0])
        return wrong(f"The mask differs at {len(differ)} of {height * width} positions.", case,
                     f"For example at (row, col) = ({r}, {c}): you have {bool(mask[r, c])}, "
                     f"expected {bool(expected[r, c])}.",
                     "Compute every position's token index row * width + col and compare it with the "
                     "pixel's index.")
    return correct("Correct: a pixel influences itself and everything after it in row-major order.",
                   "On a 16 x 16 map pixel (8, 8) (token 136) reaches 120 of the 256 outputs; pixel (0, 0) "
                   "reaches all of them; the bottom-right pixel only itself.")


# ------------------------------------------------------------------------------------ exercise 3


def _rvm_cases():
    """(description, layer, x): small RVM layers with s != 1, so that a forgotten s shows."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        mamba = RVMLayer(2, 4, 6)
        dwconv = RVMLayer(3, 4, 4, mixer="dwconv")
        with torch.no_grad():
            mamba.adjustment_factor.fill_(0.7)
            dwconv.adjustment_factor.fill_(1.3)
            for layer in (mamba, dwconv):  # LayerNorm weights other than (1, 0), so misuse shows
                layer.norm.weight.uniform_(0.5, 1.5)
                layer.norm.bias.uniform_(-0.5, 0.5)
        g = torch.Generator().manual_seed(8)
        return [
            ("RVMLayer(2, 4, 6) (Mamba mixer, s = 0.7) on x of shape (2, 4, 5, 6)", mamba,
             torch.randn(2, 4, 5, 6, generator=g)),
            ('RVMLayer(3, 4, 4, mixer="dwconv") (s = 1.3) on a volume x of shape (1, 4, 3, 4, 5)', dwconv,
             torch.randn(1, 4, 3, 4, 5, generator=g)),
        ]


def _rvm_mistakes(layer, x):
    """(output, title, hint) of typical wrong forward passes, built from the layer's submodules."""
    spatial = tuple(x.shape[2:])
    t = flatten_tokens(x)  # (b, l, c_in)
    s = layer.adjustment_factor
    m = layer.mixer(layer.norm(t), spatial)  # (b, l, c_in)
    out = lambda y: unflatten_tokens(y, spatial)  # noqa: E731
    return [
        (out(layer.projection(layer.norm(m))), "The residual path s * x is missing.",
         "Add the scaled input tokens to the mixer's output: y = Mixer(LN(x)) + s * x."),
        (out(layer.projection(layer.norm(m + t))), "The adjustment factor s is missing from the residual.",
         "The residual is s * x with s = layer.adjustment_factor (here not 1)."),
        (out(layer.projection(layer.norm(m + s * layer.norm(t)))), "The residual adds the normalised "
         "tokens s * LN(x).", "The residual path skips the LayerNorm: add s * x with the raw tokens x."),
        (out(layer.projection(m + s * t)), "The second LayerNorm is missing.",
         "Normalise y before the projection: out = Linear(LN(y)), with the same layer.norm."),
        (out(layer.projection(layer.norm(layer.mixer(t, spatial) + s * t))),
         "The mixer gets the raw tokens.", "Normalise first: Mixer(LN(x))."),
        (out(layer.norm(m + s * t)), "The projection is missing.",
         "End with layer.projection (C_in -> C_out), then unflatten."),
    ]


def check_rvm_forward(fn) -> Feedback:
    """Check ``fn(layer, x)``: the forward pass of an :class:`~lightm_edu.layers.RVMLayer`, written
    with its submodules ``layer.norm``, ``layer.mixer(tokens, spatial)``,
    ``layer.adjustment_factor`` and ``layer.projection``: x (b, c_in, *s) -> (b, c_out, *s).

    Compared with ``layer(x)`` for a 2D layer with the Mamba mixer and a 3D layer with the
    depthwise-convolution mixer, both with s != 1 and a LayerNorm that is not the identity, so
    that every term matters. Missing terms and misplaced normalisations are named.
    """
    for case, layer, x in _rvm_cases():
        b, _, *spatial = x.shape
        with torch.no_grad():
            expected = layer(x)
            got, problem = call_learner(fn, layer, x.clone())
        if problem is not None:
            if "spatial" in problem.title or "argument" in problem.title:
                problem.details.append("Every mixer is called as layer.mixer(tokens, spatial) with "
                                       "spatial = tuple(x.shape[2:]).")
            return in_case(problem, case)
        if not isinstance(got, torch.Tensor):
            return wrong(f"Your function should return a tensor, got {type(got).__name__}.", case)
        length, c_out = math.prod(spatial), layer.out_channels
        if tuple(got.shape) == (b, length, c_out):
            return wrong(f"You returned the tokens, shape {tuple(got.shape)} = (b, l, c_out).", case,
                         "Turn them back into a feature map (b, c_out, *spatial) with unflatten_tokens.")
        if tuple(got.shape) == (b, c_out, length):
            return wrong(f"The output has shape {tuple(got.shape)} = (b, c_out, l).", case,
                         "Give it back its spatial axes: (b, c_out, *spatial).")
        if _same(got, expected):
            continue
        if tuple(got.shape) == tuple(expected.shape):
            with torch.no_grad():
                for candidate, title, hint in _rvm_mistakes(layer, x):
                    if _same(got, candidate):
                        return wrong(title, case, hint)
        problem = compare_tensors(got, expected, "your output", rtol=1e-4, atol=1e-5,
                                  hint="tokens = flatten; y = mixer(norm(tokens), spatial) + s * tokens; "
                                       "out = projection(norm(y)); unflatten.")
        if problem is not None:
            return in_case(problem, case)
    return correct("Correct: your forward pass reproduces layer(x), in 2D with the Mamba mixer and in "
                   "3D with the depthwise-convolution mixer.",
                   "Note that layer.norm is applied twice: one LayerNorm, two uses.")


# ------------------------------------------------------------------------------------ exercise 4


def _parameter_count(c_in: int, c_out: int) -> int:
    return sum(p.numel() for p in RVMLayer(2, c_in, c_out).parameters())


def check_rvm_parameter_count(fn) -> Feedback:
    """Check ``fn(c_in, c_out)``: the number of trainable parameters of ``RVMLayer(2, c_in, c_out)``
    with the default Mamba mixer (d_state 16, d_conv 4, expand 2), as a formula.

    Compared with the count of the package's layer for several sizes, including ones where
    dt_rank = ceil(c_in / 16) is not c_in / 16. Counting the shared LayerNorm twice, leaving out s,
    a bias, or the ceiling are named.
    """
    cases = [(32, 32), (32, 64), (20, 20), (8, 16), (64, 128), (40, 3)]
    for c_in, c_out in cases:
        case = f"c_in = {c_in}, c_out = {c_out}."
        got, problem = call_learner(fn, c_in, c_out)
        if problem is not None:
            return in_case(problem, case)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            return wrong(f"Expected a number, got {type(got).__name__}.", case)
        expected = _parameter_count(c_in, c_out)
        if got == expected:
            continue
        rank = math.ceil(c_in / 16)
        named = {
            expected + 2 * c_in: ("You counted the LayerNorm twice.",
                                  "The RVM layer applies the same LayerNorm module twice: its 2 c_in "
                                  "parameters (weight and bias) count once."),
            expected - 1: ("The adjustment factor s is missing.", "s is one learnable scalar: + 1."),
            expected - c_out: ("The bias of the projection is missing.",
                               "The projection is nn.Linear(c_in, c_out) with bias: c_in c_out + c_out."),
            expected - 2 * c_in: ("The LayerNorm is missing.",
                                  "LayerNorm(c_in) has a weight and a bias: 2 c_in."),
            expected - c_in * c_out - c_out: ("The projection C_in -> C_out is missing.",
                                              "nn.Linear(c_in, c_out) with bias: c_in c_out + c_out."),
            expected - (6 * c_in * c_in + 4 * c_in * rank + 110 * c_in): (
                "The Mamba mixer is missing.",
                "With these defaults a Mamba block has 6 d^2 + 4 d dt_rank + 110 d parameters (d = c_in)."),
        }
        if rank * 16 != c_in:
            for wrong_rank, how in ((c_in / 16, "c_in / 16 without rounding up"),
                                    (c_in // 16, "c_in // 16 (rounded down)")):
                named.setdefault(expected - 4 * c_in * rank + 4 * c_in * wrong_rank, (
                    f"dt_rank looks like {how}.", "dt_rank = ceil(c_in / 16): math.ceil(c_in / 16)."))
        if float(got) in named:
            title, hint = named[float(got)]
            return wrong(title, case, hint)
        return wrong(f"{got} is not the count: the layer has {'more' if got < expected else 'fewer'} "
                     "parameters.", case,
                     "Count each part: the Mamba mixer (in_proj, conv1d with bias, x_proj, dt_proj with "
                     "bias, A_log, D, out_proj), the LayerNorm (once), the projection with bias, and s. "
                     "Check a part with sum(p.numel() for p in RVMLayer(2, c_in, c_out).mixer.parameters()).")
    return correct("Correct: your formula matches the package's layers for every size tried.",
                   "For c_in = c_out = 32: 9,920 (Mamba) + 64 (LayerNorm) + 1,056 (projection) + 1 (s) "
                   "= 11,041.")
