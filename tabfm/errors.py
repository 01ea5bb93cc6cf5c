"""Exceptions shared by the library and the service.

User errors are safe to show to whoever sent the input (the API maps them to 4xx); anything else is
a bug in tabfm.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class TabFMError(Exception):
    """Base class of every exception raised on purpose by tabfm."""


class TabFMUserError(TabFMError):
    """The input or the arguments are wrong; the message says what to change."""


class TabFMValidationError(ValueError, TabFMUserError):
    """Invalid data or argument value (a ``ValueError``, as scikit-learn expects)."""


class TabFMTypeError(TypeError, TabFMUserError):
    """Input of a type tabfm cannot read (a ``TypeError``, as scikit-learn expects)."""


class NotFittedError(TabFMUserError, _SklearnNotFittedError):
    """A method that needs a fitted estimator was called before ``fit``."""


INTERNAL_ERROR = "internal error in tabfm: please report it with the input that caused it"
