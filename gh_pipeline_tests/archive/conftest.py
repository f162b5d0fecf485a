from collections.abc import Iterator

import pytest

from gh_pipeline_tests.support.archive_server import ArchiveServer


@pytest.fixture
def archive() -> Iterator[ArchiveServer]:
    with ArchiveServer() as server:
        yield server
