"""``Generator`` and ``randn`` against torch's CPU stream (``tests/fixtures/rng/torch_randn.safetensors``,
made by ``torch.randn(shape, generator=torch.Generator().manual_seed(seed))``; see conftest.py)."""

from __future__ import annotations

import copy
import re
import threading

import numpy as np
import pytest
from safetensors.numpy import load_file

import candle_unet2d
from candle_unet2d import Generator, InvalidArgumentError, UNet2DError, randn

from conftest import RNG_FIXTURE

# torch's default seed (c10::detail::default_rng_seed_val): what a fresh torch.Generator() starts from.
TORCH_DEFAULT_SEED = 67280421310721

EXPECTED = load_file(str(RNG_FIXTURE))
SINGLE = sorted(k for k in EXPECTED if k.startswith("randn_seed"))
SEQUENCES = sorted(k for k in EXPECTED if k.startswith("randn_seq_seed"))


def test_the_fixture_has_cases() -> None:
    assert len(SINGLE) >= 27
    assert len(SEQUENCES) >= 3


@pytest.mark.parametrize("key", SINGLE)
def test_randn_matches_torch(key: str) -> None:
    m = re.fullmatch(r"randn_seed(\d+)_shape([\dx]+)", key)
    assert m, key
    seed = int(m.group(1))
    shape = tuple(int(d) for d in m.group(2).split("x"))
    expected = EXPECTED[key]
    assert expected.shape == shape

    out = randn(shape, generator=Generator().manual_seed(seed))
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("key", SEQUENCES)
def test_successive_draws_advance_like_torch(key: str) -> None:
    seed = int(key.removeprefix("randn_seq_seed"))
    g = Generator().manual_seed(seed)
    first = randn((2, 1, 4, 4), generator=g)
    second = randn((3, 5), generator=g)
    out = np.concatenate([first.ravel(), second.ravel()])
    np.testing.assert_allclose(out, EXPECTED[key], rtol=0, atol=1e-6)


def test_reseeding_restarts_the_stream() -> None:
    g = Generator().manual_seed(42)
    a = randn(17, generator=g)
    randn(3, generator=g)  # leaves a cached normal sample behind: manual_seed must clear it
    b = randn(17, generator=g.manual_seed(42))
    np.testing.assert_array_equal(a, b)


# --- Generator ----------------------------------------------------------------------------------------


def test_generator_api_like_torch() -> None:
    g = Generator()
    assert g.initial_seed() == TORCH_DEFAULT_SEED
    assert g.device == "cpu"
    assert g.manual_seed(5) is g, "manual_seed returns the generator itself, as torch's"
    assert g.initial_seed() == 5
    assert "5" in repr(g)
    assert Generator("cpu").initial_seed() == TORCH_DEFAULT_SEED
    assert Generator(device=None).initial_seed() == TORCH_DEFAULT_SEED


def test_seeds_wrap_like_torch() -> None:
    # torch: Generator().manual_seed(-1).initial_seed() == 2**64 - 1
    assert Generator().manual_seed(-1).initial_seed() == 2**64 - 1
    assert Generator().manual_seed(2**64 - 1).initial_seed() == 2**64 - 1
    assert Generator().manual_seed(np.int64(7)).initial_seed() == 7
    np.testing.assert_array_equal(
        randn(20, generator=Generator().manual_seed(-1)), randn(20, generator=Generator().manual_seed(2**64 - 1))
    )


def test_fresh_generator_is_torch_default_seeded() -> None:
    np.testing.assert_array_equal(
        randn(5, generator=Generator()), randn(5, generator=Generator().manual_seed(TORCH_DEFAULT_SEED))
    )


def test_nondeterministic_seed() -> None:
    g = Generator()
    s = g.seed()
    assert isinstance(s, int)
    assert 0 <= s < 2**64
    assert g.initial_seed() == s


def test_copy_snapshots_the_state() -> None:
    g = Generator().manual_seed(3)
    randn(7, generator=g)
    for snapshot in (copy.copy(g), copy.deepcopy(g)):
        assert snapshot is not g
        np.testing.assert_array_equal(randn(9, generator=snapshot), randn(9, generator=copy.copy(g)))
    after = copy.copy(g)
    randn(9, generator=g)
    assert not np.array_equal(randn(9, generator=g), randn(9, generator=after))


# --- randn's shape forms ------------------------------------------------------------------------------


def test_shape_forms() -> None:
    ref = randn((2, 3), generator=Generator().manual_seed(1))
    np.testing.assert_array_equal(randn(2, 3, generator=Generator().manual_seed(1)), ref)
    np.testing.assert_array_equal(randn([2, 3], generator=Generator().manual_seed(1)), ref)
    np.testing.assert_array_equal(randn(np.int64(2), 3, generator=Generator().manual_seed(1)), ref)
    np.testing.assert_array_equal(randn(np.array([2, 3]), generator=Generator().manual_seed(1)), ref)
    assert randn(4, generator=Generator()).shape == (4,)


def test_scalar_and_empty_shapes() -> None:
    g = Generator().manual_seed(0)
    scalar = randn((), generator=g)
    assert scalar.shape == ()
    assert scalar.dtype == np.float32
    np.testing.assert_array_equal(scalar.reshape(1), randn(1, generator=Generator().manual_seed(0)))

    # A zero-size draw leaves the generator untouched, as torch does.
    g = Generator().manual_seed(0)
    empty = randn((3, 0), generator=g)
    assert empty.shape == (3, 0)
    np.testing.assert_array_equal(randn(5, generator=g), randn(5, generator=Generator().manual_seed(0)))


def test_default_generator_is_torchs_global_one() -> None:
    assert candle_unet2d.manual_seed(11) is candle_unet2d.default_generator
    assert candle_unet2d.default_generator.initial_seed() == 11
    a = randn(6)
    b = randn(6)
    g = Generator().manual_seed(11)
    np.testing.assert_array_equal(a, randn(6, generator=g))
    np.testing.assert_array_equal(b, randn(6, generator=g), "the default generator advances between calls")


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        pytest.param(lambda: randn(-1), "≥ 0", id="negative"),
        pytest.param(lambda: randn(2.5), "int", id="float-dim"),
        pytest.param(lambda: randn("3"), "str", id="str"),
        pytest.param(lambda: randn((2, None)), "int", id="none-dim"),
        pytest.param(lambda: randn(), "missing", id="no-shape"),
        pytest.param(lambda: randn(3, generator="g"), "Generator", id="bad-generator"),
        pytest.param(lambda: randn(3, generator=[Generator()]), "one per image", id="generator-list-length"),
        pytest.param(lambda: Generator().manual_seed(1.5), "int", id="float-seed"),
        pytest.param(lambda: Generator().manual_seed(2**64), "outside", id="seed-too-big"),
        pytest.param(lambda: Generator().manual_seed("1"), "int", id="str-seed"),
        pytest.param(lambda: Generator("cuda"), "CPU", id="cuda-generator"),
    ],
)
def test_bad_arguments(call, needle: str) -> None:
    with pytest.raises(InvalidArgumentError, match=needle) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, UNet2DError)


def test_shared_generator_between_threads() -> None:
    # Draws from several threads are serialised: together they consume exactly the stream.
    g = Generator().manual_seed(9)
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def draw() -> None:
        for _ in range(50):
            x = randn(4, generator=g)
            with lock:
                results.append(x)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    g2 = Generator().manual_seed(9)
    serial = np.stack([randn(4, generator=g2) for _ in range(200)])
    drawn = np.stack(results)
    # Rows come out in some interleaving, each one a row of the serial stream; compare as sets of rows.
    assert sorted(map(tuple, drawn.tolist())) == sorted(map(tuple, serial.tolist()))


def test_a_list_of_generators_draws_one_item_each() -> None:
    # diffusers' randn_tensor(shape, generator=[...]): item i from generator i
    both = randn((2, 3), generator=[Generator().manual_seed(1), Generator().manual_seed(2)])
    for i, seed in enumerate((1, 2)):
        np.testing.assert_array_equal(both[i : i + 1], randn((1, 3), generator=Generator().manual_seed(seed)))
    with pytest.raises(InvalidArgumentError, match="one per image"):
        randn((3, 3), generator=[Generator(), Generator()])
