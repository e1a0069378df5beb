"""The registry folder: one sub-folder per model, each a ``model.gguf`` and a ``manifest.json``.

Layout under the root (``registry.path``, ``~/.cache/inferflux/models`` by default)::

    NAME/model.gguf  NAME/manifest.json   a registered model
    .partial/NAME.partial (+ .json)       an interrupted download, resumed by the next pull
    .staging/NAME-XXXX/                   a pull being assembled (removed when it ends)
    .lock                                 held while a model is committed or removed

Every path is the root joined with a validated name (:mod:`inferflux_core.registry.names`),
and checked to lie directly inside the root before it is used. A model appears only by the
atomic rename of its complete staging folder, so a reader never sees half a model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock
from pydantic import ValidationError

from inferflux_core.errors import InvalidRequestError, ModelExistsError, ModelFileError
from inferflux_core.registry.manifest import MANIFEST_FILE, MODEL_FILE, Manifest
from inferflux_core.registry.names import validate_model_name

DEFAULT_REGISTRY_PATH = Path("~/.cache/inferflux/models")
PARTIAL_DIR = ".partial"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"


class ModelRegistry:
    """The models pulled into one registry folder."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root if root is not None else DEFAULT_REGISTRY_PATH).expanduser()

    def model_dir(self, name: str) -> Path:
        """The folder of model ``name`` (validated; it may not exist)."""
        return self._inside(validate_model_name(name))

    def model_file(self, name: str) -> Path:
        """The GGUF file of registered model ``name``; a ModelFileError if it is not there."""
        self.get(name)
        path = self.model_dir(name) / MODEL_FILE
        if not path.is_file() or path.is_symlink():
            raise ModelFileError(f"registered model {name!r} has no {MODEL_FILE} in {self.root}")
        return path

    def get(self, name: str) -> Manifest:
        """The manifest of model ``name``; a ModelFileError naming the registry if absent."""
        path = self.model_dir(name) / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelFileError(
                f"model {name!r} is not in the registry {self.root} (pull it: inferflux pull "
                f"SOURCE --name {name})"
            ) from None
        except OSError as exc:
            raise ModelFileError(f"cannot read {path}: {exc.strerror}") from None
        try:
            manifest = Manifest.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise ModelFileError(f"{path} is not a valid manifest: {exc}") from None
        if manifest.name != name:
            raise ModelFileError(f"{path} names another model ({manifest.name!r})")
        return manifest

    def exists(self, name: str) -> bool:
        """True if model ``name`` is registered."""
        return (self.model_dir(name) / MANIFEST_FILE).is_file()

    def list(self) -> list[Manifest]:
        """Every registered model, by name; folders that are not valid models are skipped."""
        if not self.root.is_dir():
            return []
        manifests = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
                continue
            with contextlib.suppress(ModelFileError, InvalidRequestError, ValueError):
                manifests.append(self.get(entry.name))
        return manifests

    def remove(self, name: str) -> bool:
        """Delete model ``name`` and any partial download of it; False if neither existed."""
        folder = self.model_dir(name)
        removed = False
        with self.lock():
            if folder.is_dir() and not folder.is_symlink():
                # Renamed first so the model disappears at once, even if deleting takes time.
                doomed = self._staging_root() / f"rm-{name}-{os.urandom(4).hex()}"
                folder.rename(doomed)
                shutil.rmtree(doomed)
                removed = True
        for path in self.partial_paths(name):
            if path.exists():
                path.unlink()
                removed = True
        return removed

    def partial_paths(self, name: str) -> tuple[Path, Path]:
        """Where an interrupted download of ``name`` is kept: the bytes, and what they are of."""
        folder = self.root / PARTIAL_DIR
        name = validate_model_name(name)
        return folder / f"{name}.partial", folder / f"{name}.partial.json"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the registry's lock (between processes, too)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / LOCK_FILE), timeout=60):
            yield

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh folder to assemble model ``name`` in; removed when the block ends (a
        committed folder has been moved away by then)."""
        prefix = f"{validate_model_name(name)}-"
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self._staging_root()))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def commit(self, staged: Path, manifest: Manifest) -> Manifest:
        """Move the complete ``staged`` folder into place as ``manifest.name``, atomically;
        a ModelExistsError if that name was registered meanwhile."""
        (staged / MANIFEST_FILE).write_text(
            json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
        target = self.model_dir(manifest.name)
        with self.lock():
            if target.exists() or target.is_symlink():
                raise ModelExistsError(already_registered(manifest.name))
            staged.rename(target)
        return manifest

    def _staging_root(self) -> Path:
        folder = self.root / STAGING_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _inside(self, name: str) -> Path:
        """``root/name``, refused unless it lies directly inside the root (a second line of
        defence behind the name check)."""
        path = self.root / name
        if path.parent != self.root or path.name != name:
            raise ModelFileError(f"model name {name!r} does not name a folder of the registry")
        return path


def already_registered(name: str) -> str:
    """The message for a pull onto a name the registry holds."""
    return f"model {name!r} is already in the registry (remove it first: inferflux rm {name})"
