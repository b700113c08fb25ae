"""`--dataset=tfds --tfds_name=BUILDER`: any TFDS image builder, prepared from its
manual dir without a download, split by its identity feature.

Offline: a tiny builder defined here reads PNGs from its manual dir (the data_dir).
"""

from etils import epath
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from rae_keras import data
from rae_keras.config import ConfigError, DataConfig


class ToyFaces(tfds.core.GeneratorBasedBuilder):
    """Gray PNG faces from the manual dir; `identity` is the person."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put Person_NNNN.png files in the manual dir."
    pkg_dir_path = epath.Path(__file__).parent  # a test module, not a package

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 1)),
            "identity": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(dl_manager.manual_dir)}

    def _generate_examples(self, path):
        for png in sorted(path.glob("*.png")):
            yield png.name, {"image": png, "identity": png.name.split("_")[0]}


@pytest.fixture
def manual(tmp_path):
    """5 people, 3 faces each."""
    root = tmp_path / "manual"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(15):
        pixels = rng.integers(0, 256, (20, 20), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / f"P{i // 3}_{i:04d}.png")
    return root


def _config(tmp_path, manual, **kwargs):
    return DataConfig(dataset="tfds", tfds_name="toy_faces", data_dir=str(manual),
                      tfds_data_dir=str(tmp_path / "tfds"), image_size=8, channels=1,
                      **kwargs)


def test_any_builder_prepared_from_manual_dir_and_split_by_identity(tmp_path, manual,
                                                                     no_network):
    config = _config(tmp_path, manual, test_fraction=0.2)
    config.validate()
    splits = data.load_splits(config, str(tmp_path / "cache"))
    assert (len(splits.train), len(splits.test)) == (12, 3)
    assert set(splits.train.identities).isdisjoint(splits.test.identities)
    assert set(splits.test.identities) <= {f"P{i}" for i in range(5)}
    assert splits.train.images.shape[1:] == (8, 8, 1)
    assert 0.0 <= splits.train.images.min() and splits.train.images.max() <= 1.0


def test_tfds_needs_a_builder_name_and_an_unknown_one_is_one_line(tmp_path, no_network):
    with pytest.raises(ConfigError, match="--tfds_name"):
        DataConfig(dataset="tfds").validate()
    config = DataConfig(dataset="tfds", tfds_name="no_such_builder_here",
                        tfds_data_dir=str(tmp_path))
    with pytest.raises(data.DataError, match="no_such_builder_here") as error:
        data.load_splits(config, str(tmp_path / "cache"))
    assert "\n" not in str(error.value)


def test_unprepared_builder_without_its_files_says_where_to_put_them(tmp_path, no_network):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataError, match="manual dir") as error:
        data.load_splits(_config(tmp_path, empty / "missing"), str(tmp_path / "cache"))
    assert str(empty / "missing") in str(error.value) and "\n" not in str(error.value)
