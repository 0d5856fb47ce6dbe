"""Nachfass: warehouse-native follow-up mails for online shops. `nachfass.core` is the library every
deployable uses; `nachfass.web`, `nachfass.privacy` and `nachfass.devtools` are deployables beside the
Dagster code location (`dagster_project`); `nachfass.cli` is the command line on top."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nachfass")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0+unknown"
