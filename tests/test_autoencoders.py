import pytest
import torch
import torch.nn.functional as F

from foundation_course import autoencoders as A


def test_patchify_matches_unfold_and_unpatchify_matches_fold():
    x = torch.rand(2, 3, 12, 8)
    p = A.patchify(x, 4)
    assert p.shape == (2, 6, 48)
    assert torch.equal(p, F.unfold(x, kernel_size=4, stride=4).transpose(1, 2))
    assert torch.equal(A.unpatchify(p, 4, 3, (12, 8)), x)
    with pytest.raises(ValueError, match="not divisible by patch=5"):
        A.patchify(x, 5)


@pytest.mark.parametrize("ratio,kept", [(0.75, 12), (0.5, 24), (0.0, 49), (0.9, 5)])
def test_random_masking_keeps_the_right_patches(ratio, kept):
    keep, mask = A.random_masking(3, 49, ratio, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (3, kept) and (~mask).sum(1).tolist() == [kept] * 3
    for row_keep, row_mask in zip(keep, mask):
        assert torch.equal(
            row_keep, torch.nonzero(~row_mask).flatten()
        )  # sorted, unique, the complement of the mask
    assert kept == 49 or not torch.equal(mask[0], mask[1])  # each image has its own mask


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_random_masking_refuses_bad_ratio(ratio):
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        A.random_masking(2, 49, ratio)


def masked_patch_mse_by_loop(x, pred, mask, p=4):
    """The MAE loss by hand: cut each hidden patch out of the image by pixel indices and average the
    squared errors."""
    grid = x.shape[-1] // p
    errors = []
    for n in range(len(x)):
        for j in torch.nonzero(mask[n]).flatten().tolist():
            row, col = divmod(j, grid)
            pixels = x[n, :, row * p : (row + 1) * p, col * p : (col + 1) * p].reshape(-1)
            errors.append(((pred[n, j] - pixels) ** 2).mean())
    return torch.stack(errors).mean()


def test_mae_encoder_sees_a_quarter_and_loss_is_the_masked_patch_mse():
    torch.manual_seed(0)
    mae = A.MAE(dim=16, depth=1, heads=2, decoder_dim=16)
    x = torch.rand(4, 1, 28, 28)
    tokens, keep, mask = mae.encode(x, 0.75)
    assert tokens.shape == (4, 12, 16)
    torch.manual_seed(1)
    pred, mask = mae(x)
    assert pred.shape == (4, 49, 16) and mask.sum(1).tolist() == [37] * 4
    torch.manual_seed(1)
    loss = A.mae_loss(mae, (x,))
    assert torch.allclose(loss, masked_patch_mse_by_loop(x, pred, mask), atol=1e-6)
    assert A.FeatureExtractor(mae, "features")(x).shape == (4, 16)


def test_mae_loss_ignores_predictions_of_visible_patches():
    torch.manual_seed(0)
    mae = A.MAE(dim=16, depth=1, heads=2, decoder_dim=16)
    x = torch.rand(4, 1, 28, 28)
    real_forward = mae.forward

    def losses(change_visible, change_hidden):
        def forward(images, mask_ratio=None):
            pred, mask = real_forward(images, mask_ratio)
            hidden = mask.unsqueeze(-1)
            return pred + change_visible * ~hidden + change_hidden * hidden, mask

        mae.forward = forward
        torch.manual_seed(1)
        return A.mae_loss(mae, (x,))

    untouched = losses(0.0, 0.0)
    assert torch.equal(losses(5.0, 0.0), untouched)  # wrong visible predictions cost nothing
    assert losses(0.0, 5.0) > untouched + 1.0  # wrong hidden predictions do


def test_mae_features_are_the_mean_encoder_token_over_all_patches():
    torch.manual_seed(0)
    mae = A.MAE(dim=16, depth=1, heads=2, decoder_dim=16).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        tokens = (
            mae.embed(F.unfold(x, 4, stride=4).transpose(1, 2)) + mae.pos
        )  # all 49 patches, in order
        expected = mae.norm(mae.encoder(tokens)).mean(1)
        assert torch.allclose(mae.features(x), expected, atol=1e-6)
        corner = x.clone()
        corner[:, :, 24:, 24:] = (
            0  # the last patch: features see every patch, so this one matters too
        )
        assert not torch.allclose(mae.features(corner), mae.features(x))


def test_conv_autoencoder_learns_to_reconstruct():
    from foundation_course.data import load_images
    from foundation_course.training import fit

    torch.manual_seed(0)
    ae = A.ConvAutoencoder(width=8, latent_dim=16)
    x = load_images("fashion-mnist").train_images[:32, None].float() / 255
    assert ae(x).shape == x.shape and ae.encoder(x).shape == (32, 16)
    before = A.reconstruction_loss(ae, (x,)).item()
    fit(
        ae,
        torch.utils.data.TensorDataset(x),
        epochs=40,
        batch_size=32,
        lr=3e-3,
        loss_fn=A.reconstruction_loss,
        progress=False,
        device="cpu",
    )
    assert A.reconstruction_loss(ae, (x,)).item() < 0.7 * before
