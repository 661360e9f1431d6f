"""The dense warp of references onto a face and the reference-detail stage after the restorer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from instantrestore.degradations import degrade
from instantrestore.faces.align import resize_face
from instantrestore.faces.identity import DlibIdentity
from instantrestore.faces.warp import PiecewiseAffineWarp, sample
from instantrestore.imageio import read_image
from instantrestore.errors import ConfigError, WeightsError
from instantrestore.models.detail_fusion import DetailFusionNet
from instantrestore.reference_detail import (DETAIL_SIZE, FACE_FEATURES, REFERENCE_FEATURES, DetailSettings,
                                             ReferenceDetailStage, detail_bands, landmark_hull, landmarks_of_aligned)
from instantrestore.references import ReferenceCache

SIZE = 256


@pytest.fixture(scope="module")
def face_landmarks(shared):
    """68 landmarks of a real aligned face at SIZE."""
    from instantrestore.faces.landmarks import LandmarkPredictor

    crop = read_image(shared / "data/real-lq/cropped_faces/Adele_crop.png")
    return landmarks_of_aligned(LandmarkPredictor(), resize_face(crop, SIZE)).astype(np.float64)


def _pixel_grid(size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def test_warp_onto_the_same_landmarks_is_the_identity(face_landmarks):
    warp = PiecewiseAffineWarp(face_landmarks, face_landmarks, SIZE)
    np.testing.assert_allclose(warp.grid, _pixel_grid(SIZE), atol=1e-3)
    assert np.abs(warp.distortion).max() < 1e-4


def test_warp_of_a_global_similarity_is_that_similarity(face_landmarks):
    angle, scale, shift = np.deg2rad(5), 1.1, np.array([7.0, -4.0])
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    reference = face_landmarks @ linear.T + shift
    warp = PiecewiseAffineWarp(face_landmarks, reference, SIZE)
    expected = _pixel_grid(SIZE) @ linear.T.astype(np.float32) + shift.astype(np.float32)
    np.testing.assert_allclose(warp.grid, expected, atol=1e-2)
    assert np.abs(warp.distortion).max() < 1e-3  # a similarity bends no triangle


def test_folded_triangles_get_infinite_distortion(face_landmarks):
    reference = face_landmarks.copy()
    reference[[48, 54]] = reference[[54, 48]]  # mouth corners swapped: the mouth's triangles flip
    warp = PiecewiseAffineWarp(face_landmarks, reference, SIZE)
    folded = np.argwhere(np.isinf(warp.distortion))[:, ::-1]  # (x, y)
    assert len(folded)
    # only around the mouth: the rest of the face and the border keep finite, small bends
    nose_to_chin = face_landmarks[8, 1] - face_landmarks[33, 1]
    assert np.all(np.linalg.norm(folded - face_landmarks[48:68].mean(0), axis=1) < 1.5 * nose_to_chin)
    assert np.all(np.isfinite(warp.distortion[:, :20])) and warp.distortion[:, :20].max() < 1e-3


def test_sample_with_the_pixel_grid_returns_the_image():
    image = torch.rand(2, 3, 32, 32)
    grid = torch.from_numpy(_pixel_grid(32))[None].repeat(2, 1, 1, 1)
    torch.testing.assert_close(sample(image, grid), image, atol=1e-5, rtol=0)
    shifted = sample(image, grid + torch.tensor([1.0, 0.0]))  # read one pixel to the right
    torch.testing.assert_close(shifted[..., :-1], image[..., 1:], atol=1e-5, rtol=0)
    assert shifted[..., -1].abs().max() == 0  # outside the image: zeros, counted as "no pixels" by the stage


# ------------------------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def stage():
    return ReferenceDetailStage()


@pytest.fixture(scope="module")
def sharp_face(shared):
    """A clean FRLL photo's face (about 600 px in the photo) cut at 512."""
    from instantrestore.faces import FaceAnalyzer

    photo = read_image(shared / "data/frll/images/001/001_03.jpg")
    return FaceAnalyzer().find_faces(photo)[0].align(photo, DETAIL_SIZE)[0]


def test_strength_zero_and_a_small_face_without_references_return_the_base(stage, sharp_face):
    base = resize_face(resize_face(sharp_face, 128), DETAIL_SIZE)
    same, used = stage(base, sharp_face, DETAIL_SIZE, 128, strength=0)
    assert same is base and used is None
    out, used = stage(base, sharp_face, 128, 128)  # a crop cut from 128 photo pixels has no finer band
    np.testing.assert_array_equal(out, base)
    assert used is None


def test_a_sharp_large_face_keeps_its_own_detail(stage, sharp_face):
    """A restorer that returns its 128-px input unchanged: the stage gives back the 512-px face's detail."""
    base = cv2.resize(resize_face(sharp_face, 128), (DETAIL_SIZE, DETAIL_SIZE), interpolation=cv2.INTER_CUBIC)
    out, _ = stage(base, sharp_face, DETAIL_SIZE, 128)
    error = lambda image: np.abs(image.astype(np.float32) - sharp_face).mean()
    assert error(out) < 0.5 * error(base)


def test_a_noisy_large_face_does_not_get_its_noise_back(stage, sharp_face):
    """Noise is not detail: on a noisy face restored clean, most of the noise is not added back."""
    rng = np.random.default_rng(0)
    noisy = np.clip(sharp_face + rng.normal(0, 12, sharp_face.shape), 0, 255).astype(np.uint8)
    clean_base = cv2.GaussianBlur(sharp_face, (0, 0), 1.5)
    change, _ = stage.own_detail(noisy, clean_base)
    noise_band = (noisy.astype(np.float32) - sharp_face) - cv2.GaussianBlur(noisy.astype(np.float32) - sharp_face,
                                                                            (0, 0), stage.settings.own_sigma)
    assert np.abs(change).mean() < 0.3 * np.abs(noise_band).mean()


def test_a_blurred_input_changes_nothing(stage, sharp_face):
    blurred = cv2.GaussianBlur(sharp_face, (0, 0), 3)
    change, weight = stage.own_detail(blurred, sharp_face)  # the restoration is sharper than its input
    assert np.abs(change).mean() < 0.05 and weight.mean() < 0.01


def test_untrained_transfer_is_the_mean_high_pass_inside_the_hull(sharp_face):
    """With the gates open (no agreement or bend penalty, identity trust 1) the stage adds the mean of the
    warped references' high-pass inside the feathered landmark hull: the untrained transfer."""
    settings = DetailSettings(gates=False)
    stage = ReferenceDetailStage(settings)
    base = cv2.GaussianBlur(sharp_face, (0, 0), 3)
    landmarks = landmarks_of_aligned(stage.predictor, base)
    references = np.stack([sharp_face, np.ascontiguousarray(sharp_face[:, ::-1])])
    reference_landmarks = np.stack([landmarks_of_aligned(stage.predictor, r) for r in references])
    detail, used = stage.fuse(stage.prepare(base, sharp_face, stage.reference_planes(references), reference_landmarks))
    detail, used = detail[0].numpy() * 255, used[0].numpy()

    high_pass = []
    for reference, points in zip(references, reference_landmarks):
        image = reference.astype(np.float32) / 255
        band = (image - cv2.GaussianBlur(image, (0, 0), settings.detail_sigma, borderType=cv2.BORDER_REFLECT))
        grid = torch.from_numpy(PiecewiseAffineWarp(landmarks, points, DETAIL_SIZE).grid)[None]
        high_pass.append(sample(torch.from_numpy(band).permute(2, 0, 1)[None], grid)[0].mean(0).numpy())
    hull = landmark_hull(landmarks, DETAIL_SIZE, settings.hull_feather)
    expected = np.mean(high_pass, axis=0) * hull * 255
    np.testing.assert_allclose(detail, expected, atol=0.02)
    assert used.shape == (2,) and np.all(used > 0.9)


def test_stranger_weights():
    model = DlibIdentity.__new__(DlibIdentity)  # thresholds only, no net
    weights = model.reference_weights(np.array([0.5, model.stranger_threshold, 0.9, model.same_person_threshold, 1]))
    np.testing.assert_allclose(weights, [0, 0, (0.9 - 0.85) / (0.925 - 0.85), 1, 1])


def _in_a_plane(*degrees: float) -> np.ndarray:
    """Unit descriptors at these angles in one plane of a 3-D space: 0 and 15 degrees apart match (cosine 0.97 >=
    0.925), 30 apart do not (0.87)."""
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians)], axis=1)


def test_an_album_cuts_another_persons_photo_only_where_its_majority_agrees():
    model = DlibIdentity.__new__(DlibIdentity)  # threshold only, no net
    person, stranger, other_stranger = _in_a_plane(0, 5, 10), np.array([[0, 0, 1.0]]), np.array([[0, -1.0, 0]])
    outliers = model.album_outliers
    assert outliers(np.vstack([person, stranger])).tolist() == [False, False, False, True]
    assert outliers(np.vstack([person[:2], stranger])).tolist() == [False, False, True]
    assert outliers(np.vstack([person, stranger, other_stranger])).tolist() == [False] * 3 + [True] * 2
    # no majority to side with: two photos that disagree, two people twice, photos that all disagree
    assert not outliers(np.vstack([person[:1], stranger])).any()
    assert not outliers(np.vstack([person[:2], stranger, stranger])).any()
    assert not outliers(_in_a_plane(0, 40, 80, 120)).any()
    # a varied photo of the person still matching one of the album's core is kept (0 and 45 match only 15 and 30)
    assert not outliers(_in_a_plane(0, 15, 30, 45)).any()
    assert not outliers(person[:1]).any()


def test_reference_cache_keeps_full_resolution_crops(tmp_path):
    rng = np.random.default_rng(0)
    cache = ReferenceCache(faces=rng.integers(0, 255, (2, 16, 16, 3), np.uint8),
                           crops=rng.integers(0, 255, (2, 64, 64, 3), np.uint8),
                           landmarks=rng.random((2, 68, 2)).astype(np.float32))
    loaded = ReferenceCache.load(cache.save(tmp_path / "refs.safetensors"))
    np.testing.assert_array_equal(loaded.crops, cache.crops)
    np.testing.assert_array_equal(loaded.landmarks, cache.landmarks)
    old = ReferenceCache(faces=cache.faces)  # saved before the stage: no crops, the stage skips references
    assert ReferenceCache.load(old.save(tmp_path / "old.safetensors")).crops is None


# ------------------------------------------------------------------------------------------- in the pipeline
@pytest.fixture(scope="module")
def default_pipeline():
    from instantrestore import load_restorer

    return load_restorer("default", device="cpu")


def _face_detail(image: np.ndarray, box: np.ndarray) -> float:
    x0, y0, x1, y1 = np.round(box).astype(int)
    grey = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F)).mean())


def test_a_large_clean_face_keeps_its_detail_through_restore(default_pipeline, shared):
    """A clean studio face about 300 px wide: the restorer alone (128 px) returns it far smoother; with the
    stage and the photo's own finer band it keeps its detail and comes back close to itself."""
    photo = read_image(shared / "data/frll/images/016/016_03.jpg")
    face = default_pipeline.analyzer.find_faces(photo)[0]
    scale = 300 / (face.box[2] - face.box[0])
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    alone = default_pipeline.restore(photo, detail_strength=0)
    full = default_pipeline.restore(photo)
    box = full.faces[0].box
    assert _face_detail(alone.image, box) < 0.8 * _face_detail(photo, box)
    assert _face_detail(full.image, box) > 0.9 * _face_detail(photo, box)
    x0, y0, x1, y1 = np.round(box).astype(int)
    error = np.mean((full.image[y0:y1, x0:x1].astype(np.float64) - photo[y0:y1, x0:x1]) ** 2)
    assert 10 * np.log10(255 ** 2 / error) > 33


def test_a_small_face_without_references_is_the_restorer_alone(default_pipeline, shared):
    """Faces of the restorer's size or less, blind: exactly what the restorer alone gives."""
    photo = read_image(shared / "data/frll/images/016/016_03.jpg")
    face = default_pipeline.analyzer.find_faces(photo)[0]
    small = cv2.resize(photo, None, fx=60 / (face.box[2] - face.box[0]), fy=60 / (face.box[2] - face.box[0]),
                       interpolation=cv2.INTER_AREA)
    assert default_pipeline.analyzer.find_faces(small)[0].side_in_photo() <= default_pipeline.face_size
    np.testing.assert_array_equal(default_pipeline.restore(small, seed=0).image,
                                  default_pipeline.restore(small, seed=0, detail_strength=0).image)


def test_a_strangers_photo_in_the_persons_album_gets_no_weight(default_pipeline, shared):
    """FRLL 001's face degraded (codeformer preset), with three of 001's photos and one of 003's as references:
    the album rule cuts 003's photo whatever the restored face looks like; 001's keep their weight."""
    photo = read_image(shared / "data/frll/images/001/001_03.jpg")
    crop = default_pipeline.analyzer.find_faces(photo)[0].align(photo, DETAIL_SIZE)[0]
    degraded = degrade(crop, "codeformer", 0)
    album = [shared / f"data/frll/images/001/001_{view}.jpg" for view in ("08", "02", "04")]
    refs = default_pipeline.encode_references(album + [shared / "data/frll/images/003/003_07.jpg"])
    _, [weights] = default_pipeline.restore_faces_with_weights([degraded], refs=refs, seed=0)
    assert weights[3] == 0 and min(weights[:3]) > 0


def test_a_strangers_references_weigh_less_than_the_persons_own(default_pipeline, shared):
    """FRLL 001's face with FRLL 003's photos as references, then with its own: the identity trust and the gates
    give the stranger's photos less weight (not none: dlib's similarity of two people reaches the trust's ramp,
    docs/reference-detail.md), and a reference far below the stranger threshold gets none."""
    photo = read_image(shared / "data/frll/images/001/001_03.jpg")
    crop = default_pipeline.analyzer.find_faces(photo)[0].align(photo, DETAIL_SIZE)[0]
    views = ("08", "02", "04", "07")
    stranger = default_pipeline.encode_references([shared / f"data/frll/images/003/003_{v}.jpg" for v in views])
    own = default_pipeline.encode_references([shared / f"data/frll/images/001/001_{v}.jpg" for v in views])
    _, [stranger_weights] = default_pipeline.restore_faces_with_weights([crop], refs=stranger, seed=0)
    _, [own_weights] = default_pipeline.restore_faces_with_weights([crop], refs=own, seed=0)
    assert sum(stranger_weights) < 0.8 * sum(own_weights)
    stranger.identity = -stranger.identity  # as unlike the face as a descriptor can be
    _, [none] = default_pipeline.restore_faces_with_weights([crop], refs=stranger, seed=0)
    assert none == [0.0] * 4


# ------------------------------------------------------------------------------------------- the learned fusion
def _two_reference_inputs(stage, sharp_face):
    base = cv2.GaussianBlur(sharp_face, (0, 0), 3)
    references = np.stack([sharp_face, np.ascontiguousarray(sharp_face[:, ::-1])])
    landmarks = np.stack([landmarks_of_aligned(stage.predictor, r) for r in references])
    return stage.prepare(base, sharp_face, stage.reference_planes(references), landmarks, with_features=True)


def test_an_untrained_fusion_net_is_the_rule_based_stage(stage, sharp_face):
    """Both heads start at zero: training starts from the stage as measured without it."""
    inputs = _two_reference_inputs(stage, sharp_face)
    fused = ReferenceDetailStage(fusion=DetailFusionNet(REFERENCE_FEATURES, FACE_FEATURES, bands=3))
    with torch.no_grad():
        expected, expected_used = stage.fuse(inputs)
        detail, used = fused.fuse(inputs)
    torch.testing.assert_close(detail, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(used, expected_used)


def test_detail_bands_sum_back_to_the_detail():
    detail = torch.randn(2, 64, 64)
    bands = detail_bands(detail, (1.0, 2.0))
    assert len(bands) == 3
    torch.testing.assert_close(sum(bands), detail, atol=1e-5, rtol=0)
    assert bands[0].abs().mean() > 0 and bands[2].std() < detail.std()  # finest first


def test_fusion_net_treats_references_as_a_set_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = DetailFusionNet(REFERENCE_FEATURES, FACE_FEATURES, bands=3, width=8)
    for parameter in net.parameters():  # heads away from zero, so the test sees them
        parameter.data.normal_(0, 0.3)
    references, face = torch.rand(1, 3, REFERENCE_FEATURES, 16, 16), torch.rand(1, FACE_FEATURES, 16, 16)
    logits, gains, shape_weight = net(references, face)
    swapped_logits, swapped_gains, swapped_shape_weight = net(references[:, [2, 0, 1]], face)
    torch.testing.assert_close(swapped_logits, logits[:, [2, 0, 1]], atol=1e-5, rtol=0)
    torch.testing.assert_close(swapped_gains, gains, atol=1e-5, rtol=0)
    torch.testing.assert_close(swapped_shape_weight, shape_weight, atol=1e-5, rtol=0)
    loaded = DetailFusionNet.from_pretrained(net.save_pretrained(tmp_path / "fusion"))
    torch.testing.assert_close(loaded(references, face)[0], logits)
    with pytest.raises(WeightsError, match="no detail fusion weights"):
        DetailFusionNet.from_pretrained(tmp_path / "missing")


def test_training_the_fusion_lowers_its_loss_and_resumes(tmp_path):
    """Two synthetic samples whose truth is the start plus twice the references' detail: the band gains must
    grow, the loss fall; a second call resumes from the checkpoint."""
    from safetensors.torch import save_file

    from instantrestore.training.detail_stage import compose, load_samples, train

    rng = torch.Generator().manual_seed(0)
    size, k = 64, 2
    for number in range(2):
        detail = 0.05 * torch.randn(k, size, size, generator=rng)
        start = 60 + 120 * torch.rand(3, size, size, generator=rng)
        hull = torch.zeros(size, size)
        hull[8:56, 8:56] = 1
        target = (start + 2 * 255 * hull * detail.mean(0)).clamp(0, 255).round().to(torch.uint8)
        sample = {"detail": detail, "confidence": torch.ones(k, size, size), "hull": hull, "start": start,
                  "free": torch.ones(size, size), "reference_features": torch.rand(k, REFERENCE_FEATURES, 16, 16),
                  "face_features": torch.rand(FACE_FEATURES, 16, 16)}
        save_file({**{name: t.half() for name, t in sample.items()}, "target": target}, tmp_path / f"{number:05d}.safetensors")
    samples = load_samples(str(tmp_path))
    with pytest.raises(ConfigError, match="no samples"):
        load_samples(str(tmp_path / "empty"))
    stage = ReferenceDetailStage()
    untrained = float(torch.abs(torch.sub(*compose(stage, samples))).mean())
    out = tmp_path / "run"
    train(str(tmp_path), str(out), minutes=0.05, batch_size=2, lr=1e-2, identity_weight=0, width=8, log_every=1,
          checkpoint_every=5)
    first_steps = len((out / "log.csv").read_text().splitlines())
    final = train(str(tmp_path), str(out), minutes=0.1, batch_size=2, lr=1e-2, identity_weight=0, width=8,
                  log_every=1, checkpoint_every=5)
    assert len((out / "log.csv").read_text().splitlines()) > first_steps  # went on from the checkpoint
    trained = ReferenceDetailStage(fusion=DetailFusionNet.from_pretrained(final))
    with torch.no_grad():
        assert float(torch.abs(torch.sub(*compose(trained, samples))).mean()) < 0.8 * untrained
