"""Models on the Hugging Face Hub, by name: `facebook/deit-base-distilled-patch16-224`,
`hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k` (timm's prefix), either with `@REVISION`.

`huggingface_hub` fetches the config and safetensors files into its cache (`HF_HOME`,
`HF_HUB_CACHE`; offline with `HF_HUB_OFFLINE=1`, reading only what is cached) and gives the
snapshot folder, whose name is the resolved commit. The folder is then read like any local
model folder (`files.load_model`), or, when its config.json says kind "waveinit.learngene", as a
learngene's folder (`share.py` writes them). Pickled weights are never fetched.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import WaveError
from .storage import FORMATS, LEARNGENE_FORMAT

HUB_PREFIX = "hf-hub:"
KIND = "waveinit.learngene"  # config.json's "kind" in a learngene's Hub folder (`share.py` writes it)
FILE = "learngene.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILES = ["*.json", "*.safetensors"]  # configs, weights and shard indexes; never pickles


def hub_reference(text: str | os.PathLike, revision: str | None = None) -> tuple[str, str | None] | None:
    """(repo id, revision) when `text` names a Hub model rather than a local path, else None.

    `hf-hub:org/name[@rev]` always names the Hub; a bare `org/name[@rev]` does when no file or
    folder of that name exists here (a local path wins)."""
    text = str(text)
    prefixed = text.startswith(HUB_PREFIX)
    name = text[len(HUB_PREFIX):] if prefixed else text
    if not prefixed and (Path(name).exists() or name.endswith(".safetensors") or name.startswith((".", "/", "~"))):
        return None
    repo, _, at = name.partition("@")
    if not _REPO_ID.match(repo):
        if prefixed:
            raise WaveError(f"{text!r} is not a Hub model name: write hf-hub:ORG/NAME (optionally @REVISION)")
        return None
    if at and revision and at != revision:
        raise WaveError(f"{text!r} names revision {at} and --revision says {revision}: give one")
    return repo, (at or revision)


def resolve(repo: str, revision: str | None = None) -> tuple[Path, str]:
    """The local snapshot folder of a Hub model (fetched into the cache if needed) and its commit.
    The errors also say that no local path has the name (a bare ORG/NAME may be a mistyped path)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise WaveError(f"{repo} is a Hub model name and huggingface_hub is not installed: pip install huggingface_hub") from None
    where = f"{repo}" + (f"@{revision}" if revision else "") + " (no local file or folder has that name either)"
    try:
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=_FILES))
    except RevisionNotFoundError:
        raise WaveError(f"{where}: no such revision on the Hub: check --revision") from None
    except GatedRepoError:
        raise WaveError(f"{where} is gated: accept its terms on the Hub and log in (huggingface-cli login)") from None
    except RepositoryNotFoundError:
        raise WaveError(f"{where}: no such model on the Hub (or it is private): check the name, or log in") from None
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise WaveError(f"{where} is not in the Hugging Face cache and {why}: fetch it once online, or point HF_HUB_CACHE at a cache "
                        f"that holds it") from None
    except OSError as e:
        raise WaveError(f"{where}: cannot fetch it ({e}): check the network and the cache folder") from None
    return folder, folder.name


def describe(repo: str, commit: str) -> str:
    """How a resolved Hub model is named in provenance: `hf:ORG/NAME@COMMIT`."""
    return f"hf:{repo}@{commit}"


def is_learngene_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a learngene's Hub folder (`share.py`): its config.json says kind waveinit.learngene."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("kind") == KIND
    except (ValueError, AttributeError):
        return False


def folder_file(folder: str | os.PathLike) -> Path:
    """The learngene file of a learngene folder, checked against its config."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMATS[LEARNGENE_FORMAT]:
        raise WaveError(f"{folder}: a learngene folder of format version {version}, newer than this waveinit reads "
                        f"({FORMATS[LEARNGENE_FORMAT]}): upgrade waveinit")
    path = folder / config.get("file", FILE)
    if not path.is_file():
        raise WaveError(f"{folder}: its config.json names {path.name}, which is not there: download the whole folder again")
    return path
