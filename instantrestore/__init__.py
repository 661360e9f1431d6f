"""instantrestore: reference-guided, personalized face restoration."""

__version__ = "0.1.0"
