"""The face pipeline: detect -> 68 landmarks -> FFHQ alignment -> (restore) -> paste back; identity scores."""

from instantrestore.faces.align import align_face, estimate_alignment, ffhq_template
from instantrestore.faces.analyze import Face, FaceAnalyzer, landmarks_in_crop
from instantrestore.faces.detect import DetectedFace, FaceDetector, build_detector
from instantrestore.faces.identity import IdentityModel, cosine_similarity, load_identity_model
from instantrestore.faces.landmarks import five_points_from_68
from instantrestore.faces.paste import paste_back

__all__ = [
    "DetectedFace", "Face", "FaceAnalyzer", "FaceDetector", "IdentityModel", "align_face", "build_detector",
    "cosine_similarity", "estimate_alignment", "ffhq_template", "five_points_from_68", "landmarks_in_crop",
    "load_identity_model", "paste_back",
]
