"""The on-disk image cache and the streaming pipeline: built once and reused, rebuilt
when the source changes or a shard is corrupt, never read half-written, and a killed
run resumed from it trains exactly as an uninterrupted one.

Offline and small: folders of generated PNGs in tmp_path, a cache_dir per test.
"""

import errno
import glob
import logging
import os
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import rae_keras
from rae_keras import cache, data, preprocessing, records, testing
from rae_keras.config import DataConfig

SIZE = testing.SIZE


def _faces(root, people=6, per_person=3, seed=0):
    """A flat folder of smooth gray faces, `per_person` of each person."""
    root.mkdir(parents=True, exist_ok=True)
    images = testing.smooth_images(people * per_person, 24, seed=seed)
    for i, image in enumerate(images):
        pixels = np.round(image[..., 0] * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(root / f"P{i // per_person:02d}_{i:04d}.png")
    return root


@pytest.fixture
def folder(tmp_path):
    return _faces(tmp_path / "faces")


def _config(folder, **kwargs):
    values = dict(dataset="folder", data_dir=str(folder), image_size=SIZE, channels=1,
                  test_fraction=0.15, seed=0)
    return DataConfig(**{**values, **kwargs})


def _entries(cache_dir):
    return sorted(p for p in glob.glob(os.path.join(cache_dir, "*")) if os.path.isdir(p))


def _shards(cache_dir):
    return sorted(glob.glob(os.path.join(cache_dir, "*", "shard-*.tfrecord")))


# --------------------------------------------------------------------------- reuse
def test_cache_is_built_once_reused_and_matches_preprocessing(folder, tmp_path, monkeypatch):
    cache_dir = str(tmp_path / "cache")
    first = data.stream_splits(_config(folder), cache_dir)
    assert isinstance(first.train.images, records.RecordSet)
    assert (len(first.train), len(first.test)) == (15, 3)  # 1 of 6 people held out
    assert len(_entries(cache_dir)) == 2  # train and test

    monkeypatch.setattr(cache, "_build", lambda *a: pytest.fail("rebuilt a valid cache"))
    again = data.stream_splits(_config(folder), cache_dir)
    np.testing.assert_array_equal(again.train.images.to_numpy(), first.train.images.to_numpy())
    np.testing.assert_array_equal(again.train.identities, first.train.identities)

    # Same tensors as serving's preprocessing, to uint8 precision.
    path = sorted(glob.glob(str(folder / "P00_*.png")))[0]
    served = preprocessing.preprocess_bytes(tf.io.read_file(path), 0, SIZE, 1).numpy()
    got = first.train.images.head(1)[0] if first.train.identities[0] == "P00" else \
        first.test.images.head(1)[0]
    assert np.abs(got - served).max() <= 0.5 / 255 + 1e-6


def test_max_images_and_split_are_applied_before_decoding(folder, tmp_path, monkeypatch):
    decoded = []
    real = data.sources.FileListing.decode

    def counting(self, indices, config):
        decoded.append(len(indices))
        return real(self, indices, config)

    monkeypatch.setattr(data.sources.FileListing, "decode", counting)
    splits = data.stream_splits(_config(folder, max_images=5), str(tmp_path / "c"),
                                which=("train",))
    assert (len(splits.train), len(splits.test)) == (5, 0)
    assert decoded == [5]
    whole = data.load_splits(_config(folder), str(tmp_path / "c2"))
    capped = data.load_splits(_config(folder, max_images=5), str(tmp_path / "c3"))
    assert set(capped.train.identities) <= set(whole.train.identities)
    np.testing.assert_array_equal(capped.test.identities, whole.test.identities)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("change", ["add", "remove", "modify"])
def test_changed_source_rebuilds_the_cache(folder, tmp_path, change, caplog):
    cache_dir = str(tmp_path / "cache")
    config = _config(folder, test_fraction=0.0)
    before = data.load_splits(config, cache_dir).train
    files = sorted(folder.glob("*.png"))
    if change == "add":
        _faces(tmp_path / "more", people=1, seed=3)
        os.rename(tmp_path / "more" / "P00_0000.png", folder / "P99_0001.png")
    elif change == "remove":
        files[0].unlink()
    else:  # same name and size class, other pixels
        Image.fromarray(np.zeros((24, 24), np.uint8), mode="L").save(files[0])
    with caplog.at_level(logging.WARNING):
        after = data.load_splits(config, cache_dir).train
    assert "changed" in caplog.text and "rebuilding" in caplog.text
    expected = {"add": len(before) + 1, "remove": len(before) - 1, "modify": len(before)}
    assert len(after) == expected[change]
    if change == "modify":
        assert after.images[0].max() == 0.0 and before.images[0].max() > 0.5
    assert len(_entries(cache_dir)) == 1  # rebuilt in place, nothing stale left


def test_full_disk_is_one_line_error_and_nothing_half_written(folder, tmp_path, monkeypatch):
    cache_dir = str(tmp_path / "cache")
    written = []

    def fill_disk(writer, image):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(image)
        writer.write(image.tobytes())

    monkeypatch.setattr(cache, "_write_record", fill_disk)
    with pytest.raises(data.DataError) as error:
        data.stream_splits(_config(folder), cache_dir)
    message = str(error.value)
    assert "\n" not in message and "No space left" in message and cache_dir in message
    assert "--cache_dir" in message
    assert os.listdir(cache_dir) == []  # the partial entry was removed, never installed

    monkeypatch.undo()
    assert len(data.stream_splits(_config(folder), cache_dir).train) == 15


def test_killed_build_is_never_read(folder, tmp_path, monkeypatch):
    cache_dir = str(tmp_path / "cache")

    class Killed(BaseException):
        pass

    def die(writer, image):
        raise Killed()

    monkeypatch.setattr(cache, "_write_record", die)
    with pytest.raises(Killed):
        data.stream_splits(_config(folder), cache_dir)
    assert not glob.glob(os.path.join(cache_dir, "*", cache.MANIFEST))
    monkeypatch.undo()
    assert len(data.stream_splits(_config(folder), cache_dir).train) == 15


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_shard_is_named_and_rebuilt(folder, tmp_path, damage, caplog):
    cache_dir = str(tmp_path / "cache")
    config = _config(folder, test_fraction=0.0)
    expected = data.load_splits(config, cache_dir).train.images
    shard = _shards(cache_dir)[0]
    content = bytearray(open(shard, "rb").read())
    if damage == "truncate":
        content = content[:len(content) // 2]
    else:
        content[len(content) // 2] ^= 0xFF
    with open(shard, "wb") as f:
        f.write(bytes(content))
    with caplog.at_level(logging.WARNING):
        got = data.load_splits(config, cache_dir).train.images
    assert shard in caplog.text and "corrupt" in caplog.text
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- streaming
def test_stream_epochs_depend_only_on_seed_and_epoch(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "SHARD_RECORDS", 4)  # several shards to interleave
    images = data.stream_splits(_config(folder, test_fraction=0.0), str(tmp_path)).train.images
    assert len(images.paths) == 5

    def epochs(first):
        return [b.numpy() for b in images.epoch_batches(4, seed=3, first_epoch=first, epochs=3)]

    full, resumed = epochs(0), epochs(1)
    assert len(full) == 3 * 5 and len(resumed) == 2 * 5
    for got, want in zip(resumed, full[5:]):
        np.testing.assert_array_equal(got, want)
    stored = images.to_numpy()
    per_epoch = [np.concatenate(full[5 * e:5 * e + 5]) for e in range(3)]
    for epoch in per_epoch:  # every record once per epoch
        assert sorted(map(bytes, epoch)) == sorted(map(bytes, stored))
    assert not np.array_equal(per_epoch[0], per_epoch[1])


def test_prefix_through_a_block_equals_predict(folder, tmp_path):
    images = data.stream_splits(_config(folder, test_fraction=0.0), str(tmp_path)).train.images
    model = testing.tiny_autoencoder(seed=0)
    block = model.encoder_block(1)
    h1 = images.through(block, model.shape_at(1), str(tmp_path / "h1"))
    want = block.predict(images.to_numpy(), verbose=0)
    np.testing.assert_allclose(h1.to_numpy(), want, atol=1e-6)
    assert len(h1) == len(images) and h1.sample_shape == want.shape[1:]


@pytest.mark.parametrize("cache_frozen_prefix", [False, True])
def test_streaming_resume_equals_uninterrupted(folder, tmp_path, cache_frozen_prefix):
    """Killed after epoch 1 (its checkpoint) and resumed: the same weights, bit for bit.
    The kill: a copy of the uninterrupted run's directory as that checkpoint left it."""
    splits = data.stream_splits(_config(folder), str(tmp_path / "cache"))
    options = dict(scheme="recursive", epochs=2, batch_size=4, learning_rate=3e-3,
                   validation_data=splits.test.images, cache_frozen_prefix=cache_frozen_prefix,
                   **testing.QUIET)
    straight = testing.tiny_autoencoder(seed=0)
    model_dir, killed = str(tmp_path / "run"), str(tmp_path / "killed")
    with testing.copy_after_checkpoint(1, killed):
        rae_keras.fit(straight, splits.train.images, model_dir=model_dir, **options)
    shutil.rmtree(model_dir)
    os.rename(killed, model_dir)
    resumed = testing.tiny_autoencoder(seed=7)
    rae_keras.fit(resumed, splits.train.images, model_dir=model_dir, **options)
    want, got = testing.layer_weights(straight), testing.layer_weights(resumed)
    assert want.keys() == got.keys()
    for name in want:
        assert testing.identical(got[name], want[name]), name


def test_workers_read_disjoint_shards_and_take_equal_steps(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "SHARD_RECORDS", 4)  # 18 images: shards of 4, 4, 4, 4, 2
    images = data.stream_splits(_config(folder, test_fraction=0.0), str(tmp_path)).train.images
    parts = [images.for_worker(w, 2) for w in range(2)]
    assert [len(p) for p in parts] == [10, 8]
    assert sorted(map(bytes, np.concatenate([p.to_numpy() for p in parts]))) == \
        sorted(map(bytes, images.to_numpy()))
    steps = images.worker_steps(global_batch=6, workers=2)  # 3 per worker: 10 // 3, 8 // 3
    assert steps == 2
    for part in parts:
        batches = list(part.epoch_batches(3, seed=0, first_epoch=0, epochs=2,
                                          drop_remainder=True, steps=steps))
        assert [len(b) for b in batches] == [3] * 4


def test_a_peer_build_of_the_same_key_is_kept(folder, tmp_path, monkeypatch):
    """Workers of one run may build the same entry at once; the first one installed is
    kept (the others may already read it), the later identical build discarded."""
    cache_dir = str(tmp_path / "cache")
    config = _config(folder, test_fraction=0.0)
    data.stream_splits(config, cache_dir)
    entry_dir = _entries(cache_dir)[0]
    inode = os.stat(entry_dir).st_ino
    listing = data.sources.list_source(config)
    indices = np.arange(len(listing.identities))
    entry = cache._entry(listing, indices, config, "train-s0-t0-m0", cache_dir)
    assert entry.path == entry_dir
    real = cache._write_shards

    def peer_installs_first(ds, directory):
        written = real(ds, directory)
        shutil.copytree(entry_dir, entry_dir + ".copy")  # a peer's entry: a new inode
        shutil.rmtree(entry_dir)
        os.rename(entry_dir + ".copy", entry_dir)
        peers.append(os.stat(entry_dir).st_ino)
        return written

    peers = []
    monkeypatch.setattr(cache, "_write_shards", peer_installs_first)
    cache._build(listing, indices, config, entry)
    assert os.stat(entry_dir).st_ino == peers[0] != inode
    assert _entries(cache_dir) == [entry_dir]


def test_evaluate_reads_the_test_split_from_the_training_cache(folder, tmp_path, monkeypatch):
    cache_dir = str(tmp_path / "cache")
    trained = data.stream_splits(_config(folder, max_images=10), cache_dir)
    monkeypatch.setattr(cache, "_build", lambda *a: pytest.fail("decoded again"))
    # evaluate's data configuration: max_images is reset, the split kept.
    test = data.load_splits(_config(folder), cache_dir, which=("test",))
    assert len(test.train) == 0
    np.testing.assert_array_equal(test.test.images, trained.test.images.to_numpy())
