import pytest
import torch

from spectral_ssl import data, transforms
from spectral_ssl.data.training_input import TrainingInput, training_input

SIZE = 16
PREP = transforms.Preprocessing(SIZE)
VIEWS = transforms.augment_preset("simclr", SIZE)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    path = tmp_path_factory.mktemp("training_input")
    data.synthetic_dataset(num_rows=24, image_size=20, num_classes=3, seed=4).to_parquet(
        str(path / "train-00000-of-00001.parquet"))
    return data.load_images(str(path), "train", label_column=None)


def make(images, epoch=lambda: 0, **kwargs) -> TrainingInput:
    settings = dict(device=torch.device("cpu"), augment_on_device=True, rows=24, batch_size=8, seed=0, epoch=epoch,
                    shuffle_buffer=16)
    return training_input(images, PREP, VIEWS, **{**settings, **kwargs})


def first_batch(inputs: TrainingInput) -> dict:
    batch = next(iter(inputs.batches(0)))
    return inputs.prepare(batch) if inputs.prepare is not None else batch


def test_the_cache_serves_uint8_images_and_the_views_are_made_on_the_device(images):
    inputs = make(images, cache="ram")
    assert isinstance(inputs.batches, data.DecodedEpochLoader) and isinstance(inputs.prepare, data.DeviceViews)
    assert inputs.cache == torch.device("cpu") and len(inputs.cached) == 24 and not inputs.jpeg_on_device
    assert inputs.decode_seconds == inputs.cached.seconds > 0
    assert inputs.describe().startswith("decoded once into cpu memory (24 rows, 0 MB, ")
    x1, x2 = first_batch(inputs)["views"]
    assert x1.shape == x2.shape == (8, 3, SIZE, SIZE) and x1.dtype == torch.float32 and not torch.equal(x1, x2)


def test_streamed_with_views_on_the_device_or_in_the_loader(images):
    streamed = make(images, cache="off")
    assert isinstance(streamed.batches, data.EpochLoader) and isinstance(streamed.prepare, data.DeviceViews)
    assert streamed.cache is None and streamed.decode_seconds == 0.0
    assert streamed.describe() == "decoded in the loader every epoch"
    assert next(iter(streamed.batches(0)))["image"].dtype == torch.uint8  # decoded, not augmented, by the loader
    loader = make(images, cache="off", augment_on_device=False)
    assert isinstance(loader.batches, data.EpochLoader) and loader.prepare is None
    x1, x2 = first_batch(loader)["views"]
    assert x1.shape == x2.shape == (8, 3, SIZE, SIZE)


def test_auto_caches_only_with_views_on_the_device_and_a_known_length(images):
    assert make(images).cache == torch.device("cpu")
    assert make(images, rows=None).cache is None
    assert make(images, augment_on_device=False).cache is None


def test_device_views_are_seeded_by_the_epoch_it_reads_per_batch(images):
    epoch = [0]
    inputs = make(images, cache="ram", epoch=lambda: epoch[0])
    batch = next(iter(inputs.batches(0)))  # prepare takes the image out of the batch it is given: a copy each time
    first = inputs.prepare(dict(batch))["views"][0]
    assert torch.equal(inputs.prepare(dict(batch))["views"][0], first)  # same (seed, epoch, idx): same views
    epoch[0] = 1
    assert not torch.equal(inputs.prepare(dict(batch))["views"][0], first)


def test_a_sharded_cache_says_per_process(images):
    inputs = make(images, cache="ram", rank=1, world_size=2)
    assert len(inputs.cached) == 12 and "(12 rows per process, " in inputs.describe()


def test_decode_on_the_device_passes_the_files_through_and_decodes_each_batch_before_the_views(images):
    on_device = make(images, cache="off", decode="device")  # the choice only: the recipe's config asks for CUDA
    assert on_device.jpeg_on_device and on_device.describe() == "JPEGs decoded on the device (nvJPEG)"
    assert callable(on_device.prepare) and not isinstance(on_device.prepare, data.DeviceViews)
    cached = make(images, cache="ram", decode="device")  # the cache decodes once on the CPU
    assert not cached.jpeg_on_device and isinstance(cached.prepare, data.DeviceViews)
