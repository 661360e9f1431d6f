"""instantrestore: reference-guided, personalized face restoration.

    import instantrestore
    restorer = instantrestore.load_restorer("default")                   # a FaceRestorationPipeline
    refs = restorer.encode_references([photo1, photo2, photo3, photo4])   # once per person
    result = restorer.restore(old_photo, refs=refs)                        # RestoreResult
"""

__version__ = "0.1.0"
__all__ = ["load_restorer", "FaceRestorationPipeline", "ReferenceCache", "RestoreResult", "Restorer"]


def __getattr__(name: str):
    # Lazy: `instantrestore --help` and the image utilities should not pay for importing torch.
    if name == "load_restorer":
        from instantrestore.api import load_restorer

        return load_restorer
    if name == "ReferenceCache":
        from instantrestore.references import ReferenceCache

        return ReferenceCache
    if name in ("FaceRestorationPipeline", "RestoreResult"):
        from instantrestore import pipeline

        return getattr(pipeline, name)
    if name == "Restorer":
        from instantrestore.models.base import Restorer

        return Restorer
    raise AttributeError(f"module 'instantrestore' has no attribute {name!r}")
