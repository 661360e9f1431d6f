"""instantrestore: reference-guided, personalized face restoration.

    import instantrestore
    restorer = instantrestore.load_restorer("default")
    refs = restorer.encode_references([photo1, photo2, photo3, photo4])   # once per person
    result = restorer.restore(old_photo, refs=refs)                        # RestoreResult
"""

__version__ = "0.1.0"
__all__ = ["load_restorer", "ReferenceCache", "RestoreResult", "Restorer"]


def __getattr__(name: str):
    # Lazy: `instantrestore --help` and the image utilities should not pay for importing torch.
    if name == "load_restorer":
        from instantrestore.api import load_restorer

        return load_restorer
    if name == "ReferenceCache":
        from instantrestore.references import ReferenceCache

        return ReferenceCache
    if name in ("RestoreResult", "Restorer"):
        from instantrestore.models import base

        return getattr(base, name)
    raise AttributeError(f"module 'instantrestore' has no attribute {name!r}")
