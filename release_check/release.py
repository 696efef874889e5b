"""The previous release: which commit it is, its code, and a Python to run it.

The previous release is the code that was serving when the newest revisions
arrived: the first parent of the newest commit on the first-parent line of HEAD
that changed `alembic/versions`. Every merge to main deploys (the service
migrates on startup), so that parent is what ran on the old schema while the
new revisions were applied. It needs only the git history a clean clone has;
`--release REF` (a tag, a commit) names another.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

VERSIONS = "alembic/versions"
_STAMP = ".installed-requirements-dev.txt"  # written by scripts/ensure-environment


class ReleaseError(Exception):
    """The release cannot be found, exported or given a Python."""


def git(repository: Path, *arguments: str) -> str:
    result = subprocess.run(
        ["git", *arguments], cwd=repository, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ReleaseError(f"git {' '.join(arguments)}: {result.stderr.strip()}")
    return result.stdout.strip()


def previous_release(repository: Path) -> tuple[str, str] | None:
    """(release commit, the commit that added the newest revisions), or None
    when no commit with a parent changed the revisions."""
    if git(repository, "rev-parse", "--is-shallow-repository") == "true":
        raise ReleaseError("a shallow clone lacks the history: fetch it (git fetch --unshallow)")
    newest = git(
        repository, "log", "--first-parent", "-n", "1", "--format=%H", "HEAD", "--", VERSIONS
    )
    if not newest:
        return None
    parents = git(repository, "rev-list", "--parents", "-n", "1", newest).split()[1:]
    return (parents[0], newest) if parents else None


def resolve(repository: Path, reference: str) -> str:
    return git(repository, "rev-parse", "--verify", f"{reference}^{{commit}}")


def export(repository: Path, commit: str, destination: Path) -> Path:
    """The release's files (`git archive`: no worktree to register or clean up)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=repository, capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise ReleaseError(f"git archive {commit}: {archive.stderr.decode(errors='replace')}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")
    return destination


def python_for(release: Path) -> str:
    """This environment's Python when it was installed from the release's own
    requirements-dev.txt, else a virtual environment built once from the
    release's requirements.txt (cached by its digest)."""
    libraries = _local_libraries(release)
    installed = _installed_digest()
    if (
        not libraries
        and installed is not None
        and _digest(release / "requirements-dev.txt") == installed
    ):
        return sys.executable
    requirements = release / "requirements.txt"
    digest = _digest(requirements)
    if digest is None:
        raise ReleaseError(f"the release has no {requirements.name}")
    environment = _cache() / digest[:16]
    python = environment / "bin" / "python"
    if not (environment / ".complete").exists():
        _build(environment, requirements)
    for library in libraries:
        # The release's own copy, every time: two releases with the same
        # requirements may hold different versions of it.
        _run([
            str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--force-reinstall", str(library),
        ])  # fmt: skip
    return str(python)


def _local_libraries(release: Path) -> list[Path]:
    """The distributions the release carries in its own folders (packages/*),
    installed as its requirements' hashes cannot say (the migration
    bootstrap, alembic-lockstep): never this environment's copy of them."""
    return sorted(path.parent for path in release.glob("packages/*/pyproject.toml"))


def _run(step: list[str]) -> None:
    result = subprocess.run(step, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ReleaseError(f"{' '.join(step[:3])}: {result.stderr.strip()[-2000:]}")


def _build(environment: Path, requirements: Path) -> None:
    print(f"building the release's environment in {environment}", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(environment)],
        [
            str(environment / "bin" / "python"), "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", "--require-hashes", "-r", str(requirements),
        ],
    ]  # fmt: skip
    for step in steps:
        _run(step)
    (environment / ".complete").write_text("")


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _installed_digest() -> str | None:
    stamp = Path(sys.prefix) / _STAMP
    return stamp.read_text().strip() if stamp.exists() else None


def _cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "platform-service" / "release-environments"
