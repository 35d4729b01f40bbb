"""Tests of luminet_det.losses: hand-worked values and the properties that pin them down."""

import math

import pytest
import torch

from luminet_det.losses import dkd_loss, kd_loss, luminet_loss, perception

EPS = 1e-5


# ----------------------------------------------------------------------------- perception
def test_perception_hand_worked():
    # column 0: rows 1 and 3 -> mean 2, biased var 1 -> -1/sqrt(1+eps), +1/sqrt(1+eps)
    # column 1: rows 0 and 0 -> zero variance -> 0 (finite)
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    a = 1.0 / math.sqrt(1.0 + EPS)
    expected = torch.tensor([[-a, 0.0], [a, 0.0]])
    torch.testing.assert_close(perception(z), expected)


def test_perception_column_mean_zero_and_biased_std_one():
    torch.manual_seed(0)
    z = torch.randn(64, 7) * torch.tensor([0.1, 1, 5, 20, 3, 0.5, 9]) + torch.arange(7.0) * 10
    h = perception(z)
    # float32: a column with mean 50 and std 0.5 keeps |mean| / std * 1.2e-7 ~ 1e-5 of rounding
    # (how it falls depends on the thread count); 5e-5 is still far below any real offset
    torch.testing.assert_close(h.mean(0), torch.zeros(7), atol=5e-5, rtol=0)
    # biased std is sqrt(var / (var + eps)): 1 up to eps
    torch.testing.assert_close(h.std(0, unbiased=False), torch.ones(7), atol=2e-3, rtol=0)


def test_perception_invariant_to_per_class_shift_and_positive_scale():
    torch.manual_seed(1)
    z = torch.randn(32, 5, dtype=torch.float64)
    shift = torch.tensor([3.0, -7.0, 0.5, 100.0, -2.0], dtype=torch.float64)
    scale = torch.tensor([2.0, 0.5, 10.0, 1.0, 3.0], dtype=torch.float64)
    # eps breaks exact scale invariance: pass a tiny eps to see the property itself
    torch.testing.assert_close(perception(z + shift, 1e-12), perception(z, 1e-12))
    torch.testing.assert_close(perception(z * scale, 1e-12), perception(z, 1e-12))


def test_perception_single_row_is_zero_and_empty_is_empty():
    torch.testing.assert_close(perception(torch.tensor([[5.0, -3.0, 1.0]])), torch.zeros(1, 3))
    out = perception(torch.zeros(0, 4))
    assert out.shape == (0, 4)


def test_perception_given_statistics():
    z = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    h = perception(z, 1e-5, mean=torch.tensor([1.0, 2.0]), var=torch.tensor([4.0, 16.0]))
    expected = torch.tensor([[0.0, 0.0], [2 / math.sqrt(4 + 1e-5), 4 / math.sqrt(16 + 1e-5)]])
    torch.testing.assert_close(h, expected)
    with pytest.raises(ValueError, match="together"):
        perception(z, mean=torch.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        perception(z, mean=torch.zeros(3), var=torch.ones(3))


# ----------------------------------------------------------------------------- luminet
def test_luminet_hand_worked():
    # student perception: [[-a, 0], [a, 0]]; teacher (columns swapped): [[0, -a], [0, a]]
    # row 0: p_T = softmax([0, -a]), p_S = softmax([-a, 0]); KL = (p - q) * a = a * tanh(a / 2)
    # row 1: the mirror image, same KL.
    s = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    a = 1.0 / math.sqrt(1.0 + EPS)
    expected = a * math.tanh(a / 2)  # 0.46212...
    assert luminet_loss(s, t, temperature=1.0).item() == pytest.approx(expected, rel=1e-5)
    # at temperature T the perception logits are divided by T: a -> a / T
    assert luminet_loss(s, t, temperature=2.0).item() == pytest.approx(
        (a / 2) * math.tanh(a / 4), rel=1e-5
    )


def test_luminet_is_zero_for_identical_perception_and_ignores_affine_teacher():
    torch.manual_seed(2)
    s = torch.randn(16, 6)
    # a per-class affine map of the student's logits has the same perception
    t = s * torch.tensor([1, 2, 3, 4, 5, 6.0]) + 11.0
    assert luminet_loss(s, t).item() == pytest.approx(0.0, abs=1e-6)
    assert luminet_loss(s, torch.randn(16, 6)).item() > 0.01


def test_luminet_gradcheck_float64_and_teacher_gets_no_gradient():
    torch.manual_seed(3)
    s = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: luminet_loss(x, t, 2.0), (s,))
    luminet_loss(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_luminet_fp16_is_computed_in_float32():
    torch.manual_seed(4)
    s, t = torch.randn(32, 81), torch.randn(32, 81) * 3
    ref = luminet_loss(s, t)
    half = luminet_loss(s.half(), t.half())
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(ref.item(), rel=5e-3)
    assert torch.isfinite(luminet_loss(s.bfloat16(), t.bfloat16()))


def test_luminet_single_row_zero_variance_and_empty():
    # N = 1: both perceptions are all zeros -> identical uniform distributions -> 0
    s1 = torch.tensor([[3.0, -1.0]], requires_grad=True)
    loss = luminet_loss(s1, torch.tensor([[0.0, 9.0]]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(s1.grad).all()
    # a column with identical values in every row stays finite, gradients too
    s = torch.randn(8, 3)
    s[:, 1] = 4.0
    s.requires_grad_(True)
    loss = luminet_loss(s, torch.randn(8, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    # empty: zero connected to the graph
    e = torch.zeros(0, 5, requires_grad=True)
    loss = luminet_loss(e, torch.zeros(0, 5))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert e.grad.shape == (0, 5)


# ----------------------------------------------------------------------------- kd
def test_kd_hand_worked():
    # p_T = softmax([ln 3, 0]) = [3/4, 1/4], p_S = [1/2, 1/2]
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120...
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    s = torch.zeros(1, 2)
    assert kd_loss(s, torch.tensor([[math.log(3.0), 0.0]]), 1.0).item() == pytest.approx(kl)
    # T = 2 with teacher logits doubled: the same distributions, times T^2 = 4
    t2 = torch.tensor([[2 * math.log(3.0), 0.0]])
    assert kd_loss(s, t2, 2.0).item() == pytest.approx(4 * kl, rel=1e-6)


def test_kd_gradcheck_and_no_teacher_gradient():
    s = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, 3.0), (s,))
    kd_loss(s, t, 3.0).backward()
    assert t.grad is None


def test_kd_fp16_and_empty():
    s, t = torch.randn(16, 10), torch.randn(16, 10)
    assert kd_loss(s.half(), t.half(), 4.0).dtype == torch.float32
    assert kd_loss(s.half(), t.half(), 4.0).item() == pytest.approx(
        kd_loss(s, t, 4.0).item(), rel=5e-3
    )
    e = torch.zeros(0, 3, requires_grad=True)
    loss = kd_loss(e, torch.zeros(0, 3), 4.0)
    assert loss.item() == 0.0 and loss.requires_grad


# ----------------------------------------------------------------------------- dkd
def test_dkd_hand_worked():
    # p_T = [1/2, 3/8, 1/8] (target 0), p_S = [1/3, 1/3, 1/3]
    # TCKD: KL([1/2, 1/2] || [1/3, 2/3]) = 1/2 ln(3/2) + 1/2 ln(3/4)
    # NCKD: KL([3/4, 1/4] || [1/2, 1/2]) = 3/4 ln(3/2) + 1/4 ln(1/2)
    tckd = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
    nckd = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    t = torch.log(torch.tensor([[4.0, 3.0, 1.0]]))
    s = torch.zeros(1, 3)
    target = torch.tensor([0])
    assert dkd_loss(s, t, target, 1.0, 8.0, 1.0).item() == pytest.approx(tckd + 8 * nckd)
    assert dkd_loss(s, t, target, 2.0, 0.0, 1.0).item() == pytest.approx(2 * tckd)
    # T^2 scaling: logits times T give the same distributions at temperature T
    assert dkd_loss(s, 3 * t, target, 1.0, 1.0, 3.0).item() == pytest.approx(
        9 * (tckd + nckd), rel=1e-6
    )


def test_dkd_equals_kd_decomposition_when_weights_match():
    # Zhao et al. Eq. 4: KD = TCKD + (1 - p_T_target) * NCKD. With beta = 1 - p_T per row the
    # decomposition holds exactly; check it row by row.
    torch.manual_seed(5)
    s, t = torch.randn(1, 6, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64)
    target = torch.tensor([2])
    p_t = torch.softmax(t, 1)[0, 2].item()
    left = kd_loss(s, t, 1.0).item()
    right = dkd_loss(s, t, target, 1.0, 1.0 - p_t, 1.0).item()
    assert left == pytest.approx(right, rel=1e-9)


def test_dkd_gradcheck_large_logits_fp16_empty():
    s = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda x: dkd_loss(x, t, y, 1.0, 8.0, 2.0), (s,))
    dkd_loss(s, t, y, 1.0, 8.0, 2.0).backward()
    assert t.grad is None
    big = torch.tensor([[500.0, -500.0, 0.0]])
    assert torch.isfinite(dkd_loss(big, -big, torch.tensor([0]), 1.0, 8.0, 1.0))
    h = dkd_loss(s.detach().half(), t.detach().half(), y, 1.0, 8.0, 2.0)
    assert h.dtype == torch.float32 and torch.isfinite(h)
    e = torch.zeros(0, 4, requires_grad=True)
    loss = dkd_loss(e, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: luminet_loss(torch.zeros(4), torch.zeros(4)), "rank 2"),
        (lambda: luminet_loss(torch.zeros(2, 3), torch.zeros(2, 4)), "same shape"),
        (lambda: luminet_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0), "temperature"),
        (lambda: luminet_loss(torch.zeros(2, 3), torch.zeros(2, 3), 1.0, -1.0), "eps"),
        (lambda: kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), -2.0), "temperature"),
        (lambda: kd_loss(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), 1.0), "rank 2"),
        (lambda: perception(torch.zeros(2, 3, dtype=torch.long)), "floating point"),
        (
            lambda: dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 3])),
            r"\[0, 2\]",
        ),
        (
            lambda: dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, -1])),
            r"\[0, 2\]",
        ),
        (lambda: dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0])), "length"),
        (lambda: dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2)), "integer"),
        (
            lambda: dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), -1.0),
            "alpha",
        ),
        (
            lambda: dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), 1, 1, 0),
            "temperature",
        ),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_logit_std_kd_loss_by_hand():
    """Rows standardised over their classes with the unbiased std, then KD at T:
    s rows [1, 2, 3] -> [-1, 0, 1] and [0, 0, 3] -> [-1, -1, 2] / sqrt(3);
    t rows [3, 2, 1] -> [1, 0, -1] and [1, 1, 1] -> [0, 0, 0] (zero std: eps keeps it finite)."""
    import math

    from luminet_det.losses import build_logit_loss, logit_std_kd_loss

    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    t = torch.tensor([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    r3 = math.sqrt(3.0)
    zs = [[-1.0, 0.0, 1.0], [-1 / r3, -1 / r3, 2 / r3]]
    zt = [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]
    for T in (1.0, 2.0):

        def softmax(row):
            e = [math.exp(v / T) for v in row]
            return [x / sum(e) for x in e]

        kl = [
            sum(p * (math.log(p) - math.log(q)) for p, q in zip(softmax(a), softmax(b)))
            for a, b in zip(zt, zs)
        ]
        expected = (kl[0] + kl[1]) / 2 * T * T
        assert logit_std_kd_loss(s, t, T).item() == pytest.approx(expected, rel=1e-5)
        assert build_logit_loss("logitstd", temperature=T)(s, t).item() == pytest.approx(
            expected, rel=1e-5
        )
    # invariant to a per-row shift and scale of either side (what sets it apart from KD)
    shifted = logit_std_kd_loss(s * 3 + 7, t * 0.5 - 2, 2.0)
    assert shifted.item() == pytest.approx(logit_std_kd_loss(s, t, 2.0).item(), rel=1e-5)
    # identical standardised logits: zero; empty batch: zero and differentiable
    assert logit_std_kd_loss(s, s * 2 + 1, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(0, 3, requires_grad=True)
    out = logit_std_kd_loss(empty, torch.zeros(0, 3))
    out.backward()
    assert out.item() == 0.0 and empty.grad.shape == (0, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_std_kd_loss(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="eps must be a number > 0"):
        logit_std_kd_loss(s, t, 1.0, eps=0.0)


@pytest.mark.parametrize("shape", [(1024, 81), (512, 1000), (3, 5)])
def test_fused_luminet_equals_the_plain_formula_values_and_gradients(shape):
    """luminet_loss standardises with one fused operation (batch_norm on batch statistics) for
    speed; it must equal the plain formula (torch.var_mean perception, KL of log-softmaxes)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(sum(shape))
    s = (torch.randn(*shape, generator=g) * 2).requires_grad_(True)
    t = torch.randn(*shape, generator=g) * 5 + 3

    def plain(x, eps=1e-5):
        var, mean = torch.var_mean(x, dim=0, unbiased=False)
        return (x - mean) / torch.sqrt(var + eps)

    T = 4.0
    ref = (
        F.kl_div(
            F.log_softmax(plain(s) / T, 1),
            F.log_softmax(plain(t) / T, 1),
            reduction="none",
            log_target=True,
        )
        .sum(1)
        .mean()
    )
    (ref_grad,) = torch.autograd.grad(ref, s)
    got = luminet_loss(s, t, T)
    (got_grad,) = torch.autograd.grad(got, s)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(perception(s.detach()), plain(s.detach()), rtol=1e-5, atol=1e-6)
