"""The Python client of mlgate: :class:`Client` (blocking) and :class:`AsyncClient`.

::

    from mlgate.client import Client

    with Client("http://127.0.0.1:8000", api_key="mlg_...") as client:
        prediction = client.predict("ids", flow_features)
        scored = client.predict_frame("ids", flows_df)   # pandas: the `client` extra

Both clients share one implementation (``_core``); every public name is re-exported
here and listed in ``__all__``. The core needs only httpx: pandas and numpy are
imported by the calls that use them.
"""

from __future__ import annotations

from mlgate.client._async import AsyncAdmin, AsyncClient
from mlgate.client._auth import DEFAULT_URL, ENV_API_KEY, ENV_URL
from mlgate.client._exceptions import (
    APIError,
    AuthenticationError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    InputError,
    MlgateClientError,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PredictionTimeout,
    RateLimited,
    ServerError,
    ServerUnavailable,
    Timeout,
    UnsupportedMediaType,
    ValidationError,
    VersionNotFound,
)
from mlgate.client._models import (
    ApiKey,
    ArrayResult,
    BatchResult,
    Feature,
    Feedback,
    Health,
    ModelInfo,
    ModelSummary,
    Prediction,
    Principal,
    ServerInfo,
    User,
)
from mlgate.client._retry import RetryPolicy
from mlgate.client._sync import Admin, Client

__all__ = [
    "DEFAULT_URL",
    "ENV_API_KEY",
    "ENV_URL",
    "APIError",
    "Admin",
    "ApiKey",
    "ArrayResult",
    "AsyncAdmin",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "BatchResult",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Feature",
    "Feedback",
    "Health",
    "InputError",
    "MlgateClientError",
    "ModelInfo",
    "ModelNotFound",
    "ModelSummary",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "Prediction",
    "PredictionTimeout",
    "Principal",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServerInfo",
    "ServerUnavailable",
    "Timeout",
    "UnsupportedMediaType",
    "User",
    "ValidationError",
    "VersionNotFound",
]

# Public objects say they live here, not in the private modules (as httpx does).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("mlgate.client._"):
        _obj.__module__ = __name__
del _name, _obj
