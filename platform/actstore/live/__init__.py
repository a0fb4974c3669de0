"""The live model: a store's model and SAEs loaded once, for features on a text, corpus
evidence, steering with latents and dose-response sweeps. Imports torch (``actstore`` does not).

>>> from actstore.live import open_session
>>> session = open_session("runs/demo")  # doctest: +SKIP
"""

from actstore.config import LiveConfig
from actstore.live.run import SteerResult
from actstore.live.session import LiveSession, open_session
from actstore.live.steering import Intervention

__all__ = ["Intervention", "LiveConfig", "LiveSession", "SteerResult", "open_session"]
