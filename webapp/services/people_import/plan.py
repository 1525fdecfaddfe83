"""How a job splits: pages (one API request each) and chunks (one transaction each).

Chunks never straddle pages, so a chunk reads exactly one cached page. The page size is
therefore a multiple of the chunk size (never above what the API serves in one request),
and every chunk is full except the last of each page.
"""

from __future__ import annotations

from dataclasses import dataclass

from webapp.services.people_import.source import API_MAX_RESULTS

MAX_CHUNKS = 10_000


@dataclass(frozen=True)
class ChunkPlan:
    number: int  # from 0, in source order
    page: int  # from 1
    page_offset: int
    size: int


def page_size_for(count: int, chunk_size: int, preferred: int) -> int:
    """People per page: `preferred` rounded down to a multiple of the chunk size (at least
    one chunk, at most the API's limit), and no more than the job needs."""
    if chunk_size >= preferred:
        size = chunk_size
    else:
        size = max(chunk_size, preferred // chunk_size * chunk_size)
    size = min(size, max(chunk_size, API_MAX_RESULTS // chunk_size * chunk_size), API_MAX_RESULTS)
    return max(1, min(size, count))


def plan_chunks(count: int, chunk_size: int, page_size: int) -> list[ChunkPlan]:
    chunks: list[ChunkPlan] = []
    pages = -(-count // page_size)
    for page_index in range(pages):
        on_page = min(page_size, count - page_index * page_size)
        for offset in range(0, on_page, chunk_size):
            chunks.append(ChunkPlan(len(chunks), page_index + 1, offset, min(chunk_size, on_page - offset)))
    return chunks


def chunk_count(count: int, chunk_size: int, page_size: int) -> int:
    pages, rest = divmod(count, page_size)
    return pages * -(-page_size // chunk_size) + -(-rest // chunk_size)
