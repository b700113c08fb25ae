"""Tests for rae_keras.data: sources, preprocessing, identity split, tf.data.

All offline: lfw_subset is bundled with scikit-image, folders are generated in
tmp_path, and TFDS is either mocked or made to fail before any download.
"""

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from rae_keras import data, preprocessing, testing
from rae_keras import flags as flags_lib
from rae_keras.config import ARRAYS, ConfigError, DataConfig


# ---------------------------------------------------------------------------
# Helpers


def _write_image(path, size=(30, 40), mode="RGB", seed=0):
    """A random image of (height, width) written with PIL in the format of its suffix."""
    rng = np.random.default_rng(seed)
    shape = size if mode == "L" else size + (3,)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return str(path)


@pytest.fixture
def lfw_tree(tmp_path):
    """An LFW-style tree: 4 persons, 9 good images (one grayscale), 2 corrupt ones."""
    root = tmp_path / "lfw"
    files = {"Alice": ["Alice_0001.jpg", "Alice_0002.jpg", "Alice_0003.jpg"],
             "Bob": ["Bob_0001.png", "Bob_0002.png", "Bob_0003.PNG"],
             "Carol": ["Carol_0001.jpg", "Carol_0002.jpeg"],
             "Dan": ["Dan_0001.png"]}
    seed = 0
    for person, names in files.items():
        (root / person).mkdir(parents=True)
        for name in names:
            mode = "L" if name == "Carol_0002.jpeg" else "RGB"
            _write_image(root / person / name, mode=mode, seed=seed)
            seed += 1
    garbage = root / "Dan" / "Dan_0002.jpg"
    garbage.write_bytes(b"this is not a jpeg" * 20)
    good = (root / "Alice" / "Alice_0001.jpg").read_bytes()
    truncated = root / "Alice" / "Alice_0004.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    (root / "Alice" / "notes.txt").write_text("not an image")
    return {"root": str(root), "gray": str(root / "Carol" / "Carol_0002.jpeg"),
            "corrupt": sorted([str(garbage), str(truncated)])}


@pytest.fixture
def many_people(tmp_path):
    """A flat folder of 20 persons with 2 tiny images each."""
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(20):
        for j in (1, 2):
            _write_image(root / f"Person{i:02d}_{j:04d}.png", size=(8, 8), seed=i * 2 + j)
    return str(root)


def _all_identities(splits):
    return np.concatenate([splits.train.identities, splits.test.identities])


def _check_images(images, size, channels):
    assert images.dtype == np.float32
    assert images.shape[1:] == (size, size, channels)
    assert images.min() >= 0.0 and images.max() <= 1.0


# ---------------------------------------------------------------------------
# the registry of sources


def test_dataset_names_come_from_the_registry():
    assert flags_lib.FLAGS["dataset"].parser.enum_values == list(data.SOURCES) == [
        "lfw_subset", "folder", "lfw", "tfds"]
    with pytest.raises(ConfigError, match=r"unknown dataset 'bogus'; expected one of"):
        DataConfig(dataset="bogus").validate()
    with pytest.raises(ConfigError, match="unknown dataset 'bogus'"):
        data.load_splits(DataConfig(dataset="bogus"))
    with pytest.raises(ConfigError, match="--dataset=folder needs --data_dir"):
        DataConfig(dataset="folder").validate()
    DataConfig(dataset=ARRAYS).validate()  # data given in Python: no source loads it


def test_a_registered_source_is_a_dataset():
    """Adding a source is one decorated function; validation and load_splits see it."""
    @data.register_source("blobs")
    def blobs(config):
        """Smooth blobs, two per person."""
        images = testing.smooth_images(20, config.image_size, config.channels)
        return images, np.array([f"p{i // 2}" for i in range(20)]), []

    try:
        config = DataConfig(dataset="blobs", image_size=16, test_fraction=0.2)
        config.validate()
        splits = data.load_splits(config)
        _check_images(splits.train.images, 16, 1)
        assert (len(splits.train), len(splits.test)) == (16, 4)  # 2 of 10 people held out
        assert set(splits.train.identities).isdisjoint(splits.test.identities)
    finally:
        data.SOURCES.unregister("blobs")


# ---------------------------------------------------------------------------
# lfw_subset


def test_lfw_subset_defaults():
    splits = data.load_splits(DataConfig())
    _check_images(splits.train.images, 32, 1)
    _check_images(splits.test.images, 32, 1)
    assert len(splits.train.images) + len(splits.test.images) == 100
    assert len(splits.test.images) == 10  # ceil(0.1 * 100 identities), one face each
    assert len(set(_all_identities(splits))) == 100  # one identity per face
    assert set(splits.train.identities).isdisjoint(splits.test.identities)
    assert splits.skipped == ()


def test_lfw_subset_channels3_crop_and_resize():
    from skimage import data as skdata

    config = DataConfig(channels=3, crop=16, image_size=8, test_fraction=0.0)
    splits = data.load_splits(config)
    _check_images(splits.train.images, 8, 3)
    assert len(splits.train.images) == 100 and len(splits.test.images) == 0
    first = splits.train.images[0]
    np.testing.assert_allclose(first[..., 0], first[..., 2])  # gray replicated to RGB
    raw = skdata.lfw_subset()[0].astype(np.float32)[..., None]
    expected = preprocessing.center_crop_and_resize(raw, 16, 8).numpy()
    np.testing.assert_allclose(first[..., :1], expected, atol=1e-6)
    assert splits.train.identities[0] == "lfw_subset_000"


# ---------------------------------------------------------------------------
# folder


def test_folder_tree_skips_corrupt_and_loads_gray_as_rgb(lfw_tree):
    config = DataConfig(dataset="folder", data_dir=lfw_tree["root"], channels=3,
                        image_size=16, test_fraction=0.0)
    splits = data.load_splits(config)
    _check_images(splits.train.images, 16, 3)
    assert len(splits.train.images) == 9
    assert sorted(splits.skipped) == lfw_tree["corrupt"]
    names, counts = np.unique(splits.train.identities, return_counts=True)
    assert dict(zip(names, counts)) == {"Alice": 3, "Bob": 3, "Carol": 2, "Dan": 1}
    gray = splits.train.images[list(splits.train.identities).index("Carol") + 1]
    np.testing.assert_allclose(gray[..., 0], gray[..., 1])
    np.testing.assert_allclose(gray[..., 0], gray[..., 2])


def test_folder_tree_rgb_to_gray_and_split(lfw_tree):
    config = DataConfig(dataset="folder", data_dir=lfw_tree["root"], channels=1,
                        image_size=8, test_fraction=0.25, seed=3)
    splits = data.load_splits(config)
    _check_images(splits.train.images, 8, 1)
    assert len(set(splits.test.identities)) == 1  # ceil(0.25 * 4)
    assert set(splits.train.identities).isdisjoint(splits.test.identities)
    assert len(splits.train.images) + len(splits.test.images) == 9


def test_flat_folder_groups_numbered_files(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    _write_image(root / "Ann_0001.jpg", seed=1)
    _write_image(root / "Ann_0002.png", seed=2)
    _write_image(root / "Bob_Smith_0001.JPG", seed=3)
    _write_image(root / "Carol.jpeg", mode="L", seed=4)
    config = DataConfig(dataset="folder", data_dir=str(root), image_size=8, test_fraction=0.0)
    splits = data.load_splits(config)
    assert list(splits.train.identities) == ["Ann", "Ann", "Bob_Smith", "Carol"]
    _check_images(splits.train.images, 8, 1)


@pytest.mark.parametrize("channels", [3, 1])
def test_folder_reads_bmp_and_gif(tmp_path, channels):
    _write_image(tmp_path / "Ann_0001.bmp", seed=1)
    _write_image(tmp_path / "Bob_0001.gif", mode="L", seed=2)
    config = DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=8,
                        channels=channels, test_fraction=0.0)
    splits = data.load_splits(config)
    assert splits.skipped == ()
    assert list(splits.train.identities) == ["Ann", "Bob"]
    _check_images(splits.train.images, 8, channels)


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "all_corrupt"])
def test_folder_errors_name_the_path(tmp_path, kind):
    path = tmp_path / kind
    if kind == "file":
        path.write_text("x")
    elif kind == "empty":
        path.mkdir()
        (path / "readme.txt").write_text("no images here")
    elif kind == "all_corrupt":
        path.mkdir()
        (path / "Ann_0001.jpg").write_bytes(b"garbage")
    with pytest.raises(data.DataError, match="data_dir") as error:
        data.load_splits(DataConfig(dataset="folder", data_dir=str(path)))
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------
# identity split and max_images


def test_identity_split_deterministic_and_disjoint(many_people):
    def split(seed):
        config = DataConfig(dataset="folder", data_dir=many_people, image_size=8,
                            test_fraction=0.2, seed=seed)
        return data.load_splits(config)

    first, again, other = split(0), split(0), split(1)
    assert set(first.train.identities).isdisjoint(first.test.identities)
    assert len(set(first.test.identities)) == 4  # ceil(0.2 * 20)
    assert len(first.test.images) == 8  # both images of each held-out person
    np.testing.assert_array_equal(first.test.identities, again.test.identities)
    np.testing.assert_array_equal(first.train.images, again.train.images)
    assert set(first.test.identities) != set(other.test.identities)


@pytest.mark.parametrize("n, fraction, expected", [
    (1, 0.5, 0),   # never all identities
    (2, 0.01, 1),  # at least one when fraction > 0
    (3, 0.99, 2),  # never all
    (30, 0.1, 3),  # no float round-up to 4
    (10, 0.0, 0),
])
def test_split_identities_counts(n, fraction, expected):
    names = [f"p{i}" for i in range(n)]
    assert len(data.split_identities(names + names, fraction, seed=0)) == expected


def test_max_images_caps_train_only():
    full = data.load_splits(DataConfig(image_size=8))
    capped = data.load_splits(DataConfig(image_size=8, max_images=20))
    assert len(capped.train.images) == 20
    assert set(capped.train.identities) <= set(full.train.identities)
    np.testing.assert_array_equal(capped.test.images, full.test.images)
    np.testing.assert_array_equal(capped.test.identities, full.test.identities)
    again = data.load_splits(DataConfig(image_size=8, max_images=20))
    np.testing.assert_array_equal(capped.train.identities, again.train.identities)


# ---------------------------------------------------------------------------
# TFDS lfw (mocked: never downloads)


def _lfw_config(tmp_path, **kwargs):
    """A config whose manual dir holds a (dummy) lfw.tgz, so preparation is attempted."""
    manual = tmp_path / "manual"
    manual.mkdir(exist_ok=True)
    (manual / "lfw.tgz").write_bytes(b"")
    return DataConfig(dataset="lfw", data_dir=str(manual), tfds_data_dir=str(tmp_path / "tfds"),
                      **kwargs)


def test_tfds_lfw_mock_shapes(tmp_path, no_network):
    import tensorflow_datasets as tfds

    config = _lfw_config(tmp_path, crop=128, image_size=16, channels=3, test_fraction=0.0)
    with tfds.testing.mock_data(num_examples=5):
        splits = data.load_splits(config)
    _check_images(splits.train.images, 16, 3)
    assert len(splits.train.images) == 5
    assert splits.train.identities.dtype.kind == "U"


def test_tfds_lfw_mock_identity_split(tmp_path, no_network):
    import tensorflow_datasets as tfds

    people = ["Ann", "Bob", "Cy", "Di"]
    labels = np.array([people[i % 4] for i in range(12)])
    images = np.random.default_rng(0).integers(0, 256, (12, 250, 250, 3), dtype=np.uint8)

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    config = _lfw_config(tmp_path, crop=128, image_size=8, channels=1, test_fraction=0.25)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        splits = data.load_splits(config)
    _check_images(splits.train.images, 8, 1)
    assert len(splits.test.images) == 3 and len(set(splits.test.identities)) == 1
    assert set(splits.train.identities).isdisjoint(splits.test.identities)
    assert set(_all_identities(splits)) == set(people)


def test_tfds_lfw_without_archive_explains_what_to_do(tmp_path, monkeypatch, no_network):
    import tensorflow_datasets as tfds

    def no_download(self, *args, **kwargs):
        raise AssertionError("must not try to download without an archive")
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    manual = tmp_path / "manual"
    manual.mkdir()
    config = DataConfig(dataset="lfw", data_dir=str(manual), tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(data.DataError) as error:
        data.load_splits(config)
    message = str(error.value)
    for needed in ("lfw.tgz", data.LFW_ARCHIVE_SHA256, str(manual), "--dataset=lfw",
                   f"--data_dir={manual}", "--dataset=folder"):
        assert needed in message
    assert "\n" not in message


def test_tfds_lfw_bad_archive_is_a_data_error(tmp_path, no_network):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "lfw.tgz").write_bytes(b"not the real archive")
    config = DataConfig(dataset="lfw", data_dir=str(manual), tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(data.DataError, match="lfw.tgz") as error:
        data.load_splits(config)
    assert "checksum" in str(error.value) and str(manual) in str(error.value)


# ---------------------------------------------------------------------------
# make_dataset


def _numbered_images(n=10):
    """Image i is filled with i / 100, so batches reveal their order."""
    return np.stack([np.full((4, 4, 1), i / 100, np.float32) for i in range(n)])


def _epoch(ds):
    return [int(round(v * 100)) for batch in ds for v in batch.numpy()[:, 0, 0, 0]]


def test_make_dataset_batches_in_order_without_shuffle():
    ds = data.make_dataset(_numbered_images(), batch_size=4, shuffle=False)
    shapes = [tuple(batch.shape) for batch in ds]
    assert shapes == [(4, 4, 4, 1), (4, 4, 4, 1), (2, 4, 4, 1)]
    assert ds.element_spec.dtype == tf.float32
    assert _epoch(ds) == list(range(10))


def test_make_dataset_shuffles_each_epoch_reproducibly():
    ds = data.make_dataset(_numbered_images(), batch_size=3, shuffle=True, seed=7)
    first, second = _epoch(ds), _epoch(ds)
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second
    again = data.make_dataset(_numbered_images(), batch_size=3, shuffle=True, seed=7)
    assert _epoch(again) == first


def test_epoch_batches_depend_only_on_seed_and_epoch():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    whole = [b.numpy().ravel().tolist()
             for b in data.epoch_batches(images, 4, seed=3, first_epoch=0, epochs=3)]
    tail = [b.numpy().ravel().tolist()
            for b in data.epoch_batches(images, 4, seed=3, first_epoch=1, epochs=3)]
    assert len(whole) == 9 and whole[3:] == tail
    assert sorted(sum(whole[:3], [])) == list(range(10))
    assert whole[:3] != whole[3:6]
