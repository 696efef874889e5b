"""The heads manifest: the revision heads of the scripts, kept next to them
(alembic/heads.json) so that a process whose database is at head can know it
without importing Alembic or parsing every revision script, work that grows
with the length of the history.

The manifest records a digest of the revision files' names (listing a folder
costs next to nothing even for thousands of files; reading or even stat-ing
each one does not). When the files on disk do not match it (a revision added,
removed or renamed, or extra version locations, as the test scenarios have),
it is not used and the bootstrap parses the scripts. With
`recursive_version_locations = true` Alembic also loads revisions from
sub-folders, and so does the digest (by their paths relative to the version
location); with `sourceless = true` (revisions as .pyc files) the manifest is
never used. An edit inside a file is
caught by the checks that run once the process is ready: the heads the parsed
scripts have, and the checksums of applied revisions. `python -m service db heads --write`
rewrites it (Alembic's post-write hook runs that after `alembic revision`); a
test fails while it is out of date; and a process that started from it parses
the scripts after it is ready and fails if their heads differ.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
from pathlib import Path

MANIFEST = "heads.json"
_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";", ",": ","}


def _alembic_section(config_path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(defaults={"here": str(config_path.resolve().parent)})
    parser.read(config_path)
    return parser["alembic"]


def manifest_path(config_path: Path) -> Path:
    return Path(_alembic_section(config_path)["script_location"]) / MANIFEST


def _version_directories(section: configparser.SectionProxy) -> list[Path]:
    locations = section.get("version_locations")
    if not locations:
        return [Path(section["script_location"]) / "versions"]
    separator = _SEPARATORS.get(section.get("path_separator", "space"), " ")
    return [Path(location) for location in locations.split(separator) if location.strip()]


def files_digest(config_path: Path) -> str:
    """SHA-256 over the names of the revision files, directory by directory."""
    return _files_digest(_alembic_section(config_path))


def _files_digest(section: configparser.SectionProxy) -> str:
    digest = hashlib.sha256()
    recursive = section.get("recursive_version_locations") == "true"
    for directory in _version_directories(section):
        names = sorted(_revision_files(directory, recursive))
        digest.update(("\x00".join(["directory", *names]) + "\x00").encode())
    return digest.hexdigest()


def _revision_files(directory: Path, recursive: bool) -> list[str]:
    """The .py files Alembic reads in a version location, relative to it (it
    walks sub-folders only when recursive, and never __pycache__)."""
    if not recursive:
        return [name for name in os.listdir(directory) if name.endswith(".py")]
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        relative = Path(folder).relative_to(directory)
        found += [(relative / name).as_posix() for name in files if name.endswith(".py")]
    return found


def read_heads(config_path: Path) -> tuple[str, ...] | None:
    """The manifest's heads, or None when there is none or the files differ from it."""
    try:
        section = _alembic_section(config_path)
        if section.get("sourceless") == "true":
            return None
        manifest = json.loads((Path(section["script_location"]) / MANIFEST).read_text())
        if manifest["files"] != _files_digest(section):
            return None
        return tuple(sorted(manifest["heads"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_manifest(config_path: Path, heads: tuple[str, ...]) -> Path:
    path = manifest_path(config_path)
    manifest = {"heads": sorted(heads), "files": files_digest(config_path)}
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
