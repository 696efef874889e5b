"""The README is a front page (issue 27): short, and every page it sends a
reader to exists. The pages themselves are checked by `mkdocs build --strict`
in CI (.ci/run), which fails on a broken link, anchor or page."""

from __future__ import annotations

import re

from tests.support.processes import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
RELATIVE_LINK = re.compile(r"\]\((?!https?://)([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_a_front_page() -> None:
    assert len(README.read_text().splitlines()) <= 300


def test_every_page_the_readme_links_to_exists_in_the_site() -> None:
    links = RELATIVE_LINK.findall(README.read_text())
    assert links, "the README sends readers to the documentation"
    site = (PROJECT_ROOT / "mkdocs.yml").read_text()
    missing = [link for link in links if not (PROJECT_ROOT / link).is_file()]
    assert missing == []
    outside = [link for link in links if not link.startswith("docs/") or link[5:] not in site]
    assert outside == [], "each page is in the site's nav"


def test_the_five_reader_paths_are_on_the_front_page() -> None:
    text = README.read_text()
    for page in (
        "docs/getting-started.md",
        "docs/api.md",
        "docs/sdk.md",
        "docs/bootstrap-library.md",
        "docs/operations/index.md",
        "docs/benchmarks.md",
    ):
        assert f"]({page})" in text, page
