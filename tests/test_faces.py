"""The face pipeline: template geometry, alignment round trip, detectors, landmarks, identity, references."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import instantrestore
from instantrestore.errors import ConfigError, WeightsError
from instantrestore.faces import (FaceAnalyzer, align_face, cosine_similarity, estimate_alignment, ffhq_template,
                                  five_points_from_68, landmarks_in_crop, load_identity_model, paste_back)
from instantrestore.faces.align import ALIGN_SIZE, resize_face, transform_points
from instantrestore.faces.detect import YuNetDetector, build_detector, default_yunet_path
from instantrestore.imageio import read_image


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


def smooth_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like image without detail finer than a few pixels (so resampling twice is near lossless)."""
    coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 3)


def frll(shared, person: str, view: str, size: int | None = None) -> np.ndarray:
    photo = read_image(shared / f"data/frll/images/{person}/{person}_{view}.jpg")
    return photo if size is None else cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def face_analyzer(shared) -> FaceAnalyzer:
    return FaceAnalyzer("yunet")


@pytest.fixture(scope="module")
def face_identity():
    return load_identity_model()


# ------------------------------------------------------------------------------------------- geometry
def test_template_scales_with_crop_size():
    template = ffhq_template(512)
    assert template.shape == (5, 2)
    np.testing.assert_allclose(ffhq_template(256), template / 2, rtol=1e-6)
    np.testing.assert_allclose(ffhq_template(128), template / 4, rtol=1e-6)
    # the template's own order: left eye, right eye (in the image), nose, left and right mouth corners
    assert template[0, 0] < template[2, 0] < template[1, 0] and template[3, 0] < template[4, 0]
    assert template[:2, 1].max() < template[2, 1] < template[3:, 1].min()


@pytest.mark.parametrize("size", [512, 256])
def test_similarity_transform_maps_points_onto_template(size):
    template = ffhq_template(size)
    photo_from_crop = similarity(angle_deg=17.0, scale=1.7, shift=(40.0, -12.0))
    kps5 = transform_points(template, photo_from_crop)
    affine = estimate_alignment(kps5, size)
    np.testing.assert_allclose(transform_points(kps5, affine), template, atol=1e-2)
    np.testing.assert_allclose(affine[:, :2] @ photo_from_crop[:, :2], np.eye(2), atol=1e-4)


def test_align_then_paste_unchanged_crop_reproduces_photo(rng):
    photo = smooth_photo(rng, 300, 400)
    kps5 = transform_points(ffhq_template(256), similarity(-8.0, 0.6, (110.0, 60.0)))
    affine = estimate_alignment(kps5, 256)
    crop = align_face(photo, affine, 256)

    pasted = paste_back(photo, [crop], [affine])

    footprint = cv2.warpAffine(np.ones((256, 256), np.float32), cv2.invertAffineTransform(affine), (400, 300))
    inside = cv2.erode(footprint, np.ones((9, 9), np.uint8)) > 0.99
    error = np.abs(pasted.astype(int) - photo.astype(int))
    assert inside.sum() > 0.3 * 256 * 256 * 0.36  # the face region is a real part of the photo
    assert error[inside].mean() < 1.0 and error[inside].max() <= 6
    assert np.array_equal(pasted[footprint == 0], photo[footprint == 0])  # outside the face: untouched


def test_paste_back_upscales_and_keeps_alpha(rng):
    photo = smooth_photo(rng, 160, 192)
    alpha = np.zeros((160, 192), np.uint8)
    alpha[:, 96:] = 255
    affine = estimate_alignment(transform_points(ffhq_template(128), similarity(0.0, 0.5, (60.0, 40.0))), 128)
    crop = np.full((128, 128, 3), 255, np.uint8)  # a "restored" face that differs from the photo

    out = paste_back(photo, [crop], [affine], upscale=2, alpha=alpha)

    assert out.shape == (320, 384, 4)
    assert (out[:, :180, 3] == 0).all() and (out[:, 204:, 3] == 255).all()
    centre = transform_points(ffhq_template(128)[2:3], cv2.invertAffineTransform(affine))[0] * 2 + 0.5
    assert (out[int(centre[1]), int(centre[0]), :3] == 255).all()  # the face was pasted at its upscaled place


def test_paste_back_rejects_mismatched_lists(rng):
    with pytest.raises(ValueError, match="2 restored faces but 1"):
        paste_back(smooth_photo(rng, 64, 64), [np.zeros((32, 32, 3), np.uint8)] * 2, [np.eye(2, 3)])


# ------------------------------------------------------------------------------------------- detection
@pytest.mark.parametrize("backend", ["dlib", "yunet"])
def test_detector_finds_the_frll_face(shared, backend):
    photo = frll(shared, "001", "03", size=384)
    faces = build_detector(backend).detect(photo)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    assert x0 < 192 < x1 and y0 < 210 < y1 and 80 < x1 - x0 < 250  # the face sits in the middle
    if backend == "yunet":
        eye_left, eye_right, nose, mouth_left, mouth_right = faces[0].kps5
        assert eye_left[0] < nose[0] < eye_right[0] and mouth_left[0] < mouth_right[0]
        assert max(eye_left[1], eye_right[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_yunet_upscaled_level_finds_a_14_px_face(shared):
    """A blurred 14-px face in a small photo: YuNet misses it at its own size, finds it at twice the size."""
    photo = frll(shared, "021", "03")
    clean_box = YuNetDetector().detect(photo)[0].box
    scale = 14 / float(clean_box[2] - clean_box[0])
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 320, 3), 110, np.uint8)
    y0, x0 = (240 - small.shape[0]) // 2, (320 - small.shape[1]) // 2
    canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    canvas = cv2.GaussianBlur(canvas, (0, 0), 1.0)
    expected = clean_box * scale + np.array([x0, y0, x0, y0])

    assert YuNetDetector(fine_side=0).detect(canvas) == []
    faces = YuNetDetector().detect(canvas)
    assert len(faces) == 1
    inter = np.clip(np.minimum(faces[0].box[2:], expected[2:]) - np.maximum(faces[0].box[:2], expected[:2]), 0, None)
    union = np.prod(faces[0].box[2:] - faces[0].box[:2]) + np.prod(expected[2:] - expected[:2]) - np.prod(inter)
    assert np.prod(inter) / union > 0.7


@pytest.mark.parametrize("view", ["03", "08"])
def test_yunet_upscaled_level_adds_no_large_face(shared, view):
    """At twice the size YuNet also scores 021's shirt collar as a face (0.61, a box larger than the face):
    the fine level keeps only small boxes, so a large photo gets the same single face as without it."""
    photo = frll(shared, "021", view)
    without_fine = YuNetDetector(fine_side=0).detect(photo)
    assert len(without_fine) == 1
    with_fine = YuNetDetector().detect(photo)
    assert len(with_fine) == 1
    np.testing.assert_allclose(with_fine[0].box, without_fine[0].box, atol=1)


def test_yunet_weights_missing_or_wrong(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        YuNetDetector(tmp_path / "yunet_n_dynamic.onnx")
    wrong = tmp_path / "other.onnx"
    wrong.write_bytes(b"not the model")
    with pytest.raises(WeightsError, match="sha256"):
        YuNetDetector(wrong)


def test_default_detector_is_the_packaged_yunet_without_shared(tmp_path, monkeypatch):
    """A fresh install has no ../shared: YuNet still comes from the package, with no warning."""
    monkeypatch.setenv("INSTANTRESTORE_SHARED", str(tmp_path / "nowhere"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = build_detector("default")
    assert isinstance(detector, YuNetDetector)
    assert default_yunet_path().is_relative_to(Path(instantrestore.__file__).parent)
    assert (default_yunet_path().parent / "LICENSE-yunet.txt").is_file()


def test_unknown_detector_name():
    with pytest.raises(ConfigError, match="unknown face detector 'mtcnn'"):
        build_detector("mtcnn")


def test_detector_from_an_onnx_path(tmp_path):
    assert isinstance(build_detector(str(default_yunet_path())), YuNetDetector)
    with pytest.raises(WeightsError, match="no such face detector model"):
        build_detector(str(tmp_path / "det_10g.onnx"))


# ------------------------------------------------------------------------------------------- landmarks
def test_five_points_from_68_order():
    lm68 = np.zeros((68, 2), np.float32)
    lm68[36:42] = [100, 200]   # subject's right eye = left in the image
    lm68[42:48] = [300, 200]
    lm68[30] = [200, 280]
    lm68[48] = [130, 350]
    lm68[54] = [270, 350]
    np.testing.assert_array_equal(five_points_from_68(lm68),
                                  [[100, 200], [300, 200], [200, 280], [130, 350], [270, 350]])


def test_face_landmarks_and_alignment_on_frll(shared, face_analyzer):
    photo = frll(shared, "001", "03", size=384)
    faces = face_analyzer.find_faces(photo)
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks68.shape == (68, 2) and face.kps5.shape == (5, 2)
    np.testing.assert_array_equal(face.kps5, five_points_from_68(face.landmarks68))
    # the 68 points (placed in a box built from YuNet's points) agree with YuNet's own on a clean frontal face
    eye_distance = np.linalg.norm(face.kps5[1] - face.kps5[0])
    assert np.linalg.norm(face.detector_kps5 - face.kps5, axis=1).max() < 0.25 * eye_distance
    crop, affine = face.align(photo, 256)
    assert crop.shape == (256, 256, 3)
    in_crop = landmarks_in_crop(face, affine)
    np.testing.assert_allclose(five_points_from_68(in_crop), ffhq_template(256), atol=0.1 * 256)


def test_only_center_face_keeps_the_middle_one(shared, face_analyzer):
    small = frll(shared, "001", "03", size=192)
    canvas = np.full((384, 768, 3), 200, np.uint8)
    canvas[96:288, 288:480] = small      # in the middle
    canvas[0:192, 0:192] = frll(shared, "002", "03", size=192)
    both = face_analyzer.find_faces(canvas)
    centre = face_analyzer.find_faces(canvas, only_center_face=True)
    assert len(both) == 2 and len(centre) == 1
    assert 288 < (centre[0].box[0] + centre[0].box[2]) / 2 < 480


# ------------------------------------------------------------------------------------------- identity
def test_identity_same_person_beats_different_person(shared, face_analyzer, face_identity):
    photos = [frll(shared, "001", "03", 384), frll(shared, "001", "08", 384), frll(shared, "002", "03", 384)]
    crops = [face_analyzer.find_faces(photo)[0].align(photo, 256)[0] for photo in photos]
    embeddings = face_identity.embed(crops)
    assert embeddings.shape == (3, face_identity.dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert cosine_similarity(embeddings[0], face_identity.embed([crops[0]])[0]) == pytest.approx(1.0, abs=1e-6)
    same, different = cosine_similarity(embeddings[0], embeddings[1]), cosine_similarity(embeddings[0], embeddings[2])
    assert same > face_identity.same_person_threshold > different


def test_arcface_model_missing(tmp_path):
    with pytest.raises(WeightsError, match="ArcFace"):
        load_identity_model(tmp_path / "w600k_r50.onnx")


# ------------------------------------------------------------------------------------------- references
def test_reference_crops_aligned_crop_and_whole_photo(shared, face_analyzer, face_identity):
    aligned = read_image(shared / "data/real-lq/cropped_faces/Adele_crop.png")
    photo = frll(shared, "001", "03", size=384)
    faceless = np.full((100, 160, 3), 90, np.uint8)
    tiny = cv2.resize(aligned, (32, 32), interpolation=cv2.INTER_AREA)
    faceless_square = np.full((128, 128, 3), 90, np.uint8)

    crops, notes = face_analyzer.reference_crops([aligned, photo, faceless, tiny], face_identity)

    assert len(crops) == 2
    # full resolution: an aligned crop as it is, a whole photo's face cut at 512 (a model's size comes later,
    # area-averaged as the training crops were, not warped straight to it)
    np.testing.assert_array_equal(crops[0], aligned)
    np.testing.assert_array_equal(crops[1], face_analyzer.find_faces(photo)[0].align(photo, ALIGN_SIZE)[0])
    assert notes == ["reference 3: no face found; skipped",
                     "reference 4: 32x32 is too small to guide a restoration (under 64 px); skipped"]
    # A square image without a detectable face may be a degraded aligned crop: used, and said so.
    crops, notes = face_analyzer.reference_crops([faceless_square], face_identity)
    assert len(crops) == 1 and "no face detected in a square image" in notes[0]


def test_reference_crops_group_photo_takes_the_matching_face(shared, face_analyzer, face_identity):
    group = np.concatenate([frll(shared, "001", "03", 384), frll(shared, "002", "03", 384)], axis=1)
    other_photo_of_002 = frll(shared, "002", "08", 384)

    crops, notes = face_analyzer.reference_crops([group, other_photo_of_002], face_identity)

    assert len(crops) == 2
    expected = face_analyzer.find_faces(group[:, 384:])[0].align(group[:, 384:], 256)[0]
    chosen, wanted = face_identity.embed([crops[0], expected])
    assert cosine_similarity(chosen, wanted) > 0.99
    assert len(notes) == 1 and notes[0].startswith("reference 1: 2 faces found; used face")
