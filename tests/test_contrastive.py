import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foundation_course import contrastive as C


def nt_xent_by_anchor(z1, z2, temperature):
    "The test oracle: NT-Xent exactly as written, one anchor at a time, in float64."
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    total = 0
    for i in range(n2):
        partner = (i + n2 // 2) % n2
        denominator = sum(torch.exp(z[i] @ z[k] / temperature) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(z[i] @ z[partner] / temperature) / denominator)
    return total / n2


def assert_matches_oracle(loss_fn, n, dim, tau, tol=1e-12):
    "`loss_fn` equals the float64 oracle, value and gradients, on random float64 views."
    g = torch.Generator().manual_seed(n * 100 + dim)
    z1 = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    ours, oracle = loss_fn(z1, z2, tau), nt_xent_by_anchor(z1, z2, tau)
    assert ours.dtype == torch.float64
    assert abs(ours.item() - oracle.item()) < tol * max(1.0, oracle.item())
    for a, b in zip(torch.autograd.grad(ours, (z1, z2)), torch.autograd.grad(oracle, (z1, z2))):
        assert torch.allclose(a, b, rtol=0, atol=tol)


ORACLE_CASES = [(2, 4, 0.5), (2, 16, 1000.0), (7, 8, 0.07), (16, 32, 0.2), (5, 3, 50.0)]


@pytest.mark.parametrize("n,dim,tau", ORACLE_CASES)
def test_nt_xent_matches_per_anchor_oracle_in_float64(n, dim, tau):
    assert_matches_oracle(C.nt_xent, n, dim, tau)


class _FunctionalWith:
    "torch.nn.functional with one function replaced: a mutant for the module that imports it as F."

    def __init__(self, **replaced):
        self.replaced = replaced

    def __getattr__(self, name):
        return self.replaced.get(name, getattr(F, name))


def _cross_entropy_at_temperature_off_by(factor):
    return lambda logits, target, **kw: F.cross_entropy(logits * factor, target, **kw)


def _eye_that_masks_nothing(n, **kw):
    return torch.zeros(n, n, **kw)


@pytest.mark.parametrize("mutant", ["temperature 1% off", "diagonal not masked"])
def test_oracle_test_fails_when_nt_xent_is_perturbed(monkeypatch, mutant):
    "A mutation check: the oracle test above must catch a small mistake in nt_xent."
    if mutant == "temperature 1% off":
        monkeypatch.setattr(
            C, "F", _FunctionalWith(cross_entropy=_cross_entropy_at_temperature_off_by(1.01))
        )
    else:
        monkeypatch.setattr(
            C.torch, "eye", _eye_that_masks_nothing
        )  # the oracle loops, never calls torch.eye
    for case in ORACLE_CASES[2:4]:
        with pytest.raises(AssertionError):
            assert_matches_oracle(C.nt_xent, *case)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("loss_fn", [C.nt_xent, C.info_nce])
def test_half_precision_input_is_computed_in_float32(dtype, loss_fn):
    g = torch.Generator().manual_seed(5)
    z1, z2 = (torch.randn(8, 16, generator=g).to(dtype) for _ in range(2))
    loss = loss_fn(z1, z2, 0.1)
    exact = loss_fn(z1.double(), z2.double(), 0.1)  # the same (rounded) inputs, computed in float64
    assert loss.dtype == torch.float32
    assert abs(loss.item() - exact.item()) < 1e-5 * max(1.0, exact.item())


def test_nt_xent_large_temperature_tends_to_uniform():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    assert abs(C.nt_xent(z1, z2, 1e6).item() - np.log(2 * 8 - 1)) < 1e-4


def test_nt_xent_rewards_aligned_views():
    z = torch.eye(6)  # orthogonal samples, identical views: the best case
    assert C.nt_xent(z, z, 0.1) < 0.01 < C.nt_xent(z, z.roll(1, 0), 0.1)


@pytest.mark.parametrize(
    "z1,z2,tau,match",
    [
        (torch.randn(1, 8), torch.randn(1, 8), 0.5, "at least 2"),
        (torch.randn(4, 8), torch.randn(4, 16), 0.5, "same shape"),
        (torch.randn(4, 8), torch.randn(3, 8), 0.5, "same shape"),
        (torch.randn(4, 8), torch.randn(4, 8), 0.0, "temperature must be > 0"),
        (torch.randn(4, 8), torch.randn(4, 8), -0.1, "temperature must be > 0"),
        (torch.randn(4, 2, 4), torch.randn(4, 2, 4), 0.5, "2-D"),
    ],
)
def test_bad_input_is_refused(z1, z2, tau, match):
    for loss in (C.nt_xent, C.info_nce):
        with pytest.raises(ValueError, match=match):
            loss(z1, z2, tau)


def test_nan_from_a_degenerate_batch_is_explained():
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    zero = z1.clone()
    zero[2] = 0
    with pytest.raises(FloatingPointError, match="all zeros"):
        C.nt_xent(zero, z2, 0.5)
    nan = z1.clone()
    nan[0, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        C.nt_xent(nan, z2, 0.5)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        C.info_nce(z1, nan, 0.5)


def test_info_nce_matches_loop_in_float64():
    g = torch.Generator().manual_seed(3)
    q, k = (
        torch.randn(6, 5, generator=g, dtype=torch.float64),
        torch.randn(6, 5, generator=g, dtype=torch.float64),
    )
    qn, kn = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    tau = 0.05
    expected = np.mean(
        [-(qn[i] @ kn[i] / tau - torch.logsumexp(qn[i] @ kn.T / tau, 0)).item() for i in range(6)]
    )
    loss = C.info_nce(q, k, tau)
    assert loss.dtype == torch.float64 and abs(loss.item() - expected) < 1e-12


def test_knn_accuracy_matches_sklearn():
    from sklearn.neighbors import KNeighborsClassifier

    g = torch.Generator().manual_seed(0)
    ftr, fte = torch.randn(300, 8, generator=g), torch.randn(100, 8, generator=g)
    ytr, yte = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (100,), generator=g)
    for k in (1, 15, 300):
        sk = KNeighborsClassifier(
            n_neighbors=k,
            metric="cosine",
            algorithm="brute",
            weights=lambda d: np.exp((1 - d) / 0.1),
        )
        expected = (sk.fit(ftr.numpy(), ytr.numpy()).predict(fte.numpy()) == yte.numpy()).mean()
        assert abs(C.knn_accuracy(ftr, ytr, fte, yte, k=k, chunk=33) - expected) < 1e-9
    with pytest.raises(ValueError, match="k must be between"):
        C.knn_accuracy(ftr, ytr, fte, yte, k=301)


def test_sentence_pairs():
    p = C.sentence_pairs(["a", "a", "b"], [1, 0, 1])
    assert list(zip(p["i"], p["j"])) == [(0, 1), (0, 2), (1, 2)]
    assert p["same_group"].tolist() == [True, False, False] and p["same_label"].tolist() == [
        False,
        True,
        False,
    ]


def test_linear_probe_learns_and_head_works_on_raw_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=g) * 4
    y = torch.arange(3).repeat(100)
    x = (
        centers[y] + torch.randn(300, 16, generator=g) + 10
    )  # offset: the returned head must undo the standardization
    acc, head = C.linear_probe(x[:150], y[:150], x[150:], y[150:], steps=100)
    assert acc > 0.95
    assert (head(x[150:]).argmax(1) == y[150:]).float().mean() == pytest.approx(acc)


def test_resnet_encoder_and_simclr_loss_train_the_encoder():
    torch.manual_seed(0)
    enc = C.resnet_encoder(width=8)
    assert enc(torch.rand(3, 1, 28, 28)).shape == (3, 32) and enc.feature_dim == 32
    model = C.SimCLR(enc, enc.feature_dim, proj_dim=16)
    views = (torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28))
    loss = C.simclr_loss(0.5)(model, views)
    loss.backward()
    assert torch.isfinite(loss) and enc[0].weight.grad.abs().sum() > 0


def test_augmenting_collate_and_augmented_features():
    from foundation_course.data import ContrastiveAugment

    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    pairs = C.augmenting_collate(ContrastiveAugment(28), views=2)
    v1, v2 = pairs([(img[None],) for img in images])
    assert v1.shape == v2.shape == (5, 1, 28, 28) and v1.dtype == torch.float32
    assert not torch.equal(v1, v2)
    view, labels = C.augmenting_collate(ContrastiveAugment(28))(
        [(img[None], torch.tensor(i)) for i, img in enumerate(images)]
    )
    assert view.shape == (5, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="views"):
        C.augmenting_collate(ContrastiveAugment(28), views=0)
    enc = C.resnet_encoder(width=4)
    feats, labels = C.augmented_features(
        enc, images, torch.arange(5), ContrastiveAugment(28), views=2
    )
    assert feats.shape == (15, 16) and labels.tolist() == [0, 1, 2, 3, 4] * 3
    assert torch.allclose(feats[:5], C.extract_features(enc, images))


def test_save_and_load_encoder(tmp_path):
    enc = C.resnet_encoder(width=4)
    C.save_encoder(enc, tmp_path / "enc", dict(width=4))
    back = C.load_encoder(tmp_path / "enc")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(enc.eval()(x), back(x))
    with pytest.raises(FileNotFoundError, match="05_contrastive"):
        C.load_encoder(tmp_path / "missing")


def test_simcse_positive_pairs_come_from_dropout():
    torch.manual_seed(0)
    ids, mask = torch.randint(5, 100, (4, 7)), torch.ones(4, 7, dtype=torch.long)
    mask[0, 5:] = 0
    batch = dict(input_ids=ids, attention_mask=mask)
    no_dropout = C.small_text_encoder(100, hidden=16, layers=1, heads=2, dropout=0.0)
    z = no_dropout(ids, mask)
    assert torch.allclose(C.simcse_loss(0.05)(no_dropout, batch), C.info_nce(z, z, 0.05), atol=1e-5)
    with_dropout = C.small_text_encoder(100, hidden=16, layers=1, heads=2, dropout=0.3).train()
    assert not torch.allclose(with_dropout(ids, mask), with_dropout(ids, mask))
    assert torch.allclose(
        C.mean_pool(
            torch.ones(1, 3, 2) * torch.tensor([1.0, 2.0, 9.0])[None, :, None],
            torch.tensor([[1, 1, 0]]),
        ),
        torch.tensor([[1.5, 1.5]]),
    )
