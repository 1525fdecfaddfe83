"""The parts of the import that need no database: record validation, sources, the page
cache, chunk planning, the sample files and the generator that made them."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from support.randomuser_server import RandomUserServer
from webapp.services.people_import.plan import chunk_count, page_size_for, plan_chunks
from webapp.services.people_import.reach import FetchPolicy
from webapp.services.people_import.records import InvalidRecord, person_row
from webapp.services.people_import.source import (
    PageCache,
    PageMissing,
    PageRequest,
    Source,
    SourceError,
    SourceRefused,
    fetch_page,
    page_records,
    parse_source,
)

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = FetchPolicy(("127.0.0.1",))  # the test's own randomuser server
SAMPLES = REPO / "samples"


def sample(count: int = 20) -> list[dict[str, Any]]:
    return json.loads((SAMPLES / f"people-{count}.json").read_text(encoding="utf-8"))["results"]


@pytest.fixture
def record() -> dict[str, Any]:
    return copy.deepcopy(sample()[0])


# Records -----------------------------------------------------------------------------------

def test_a_sample_record_becomes_a_flat_row(record: dict[str, Any]) -> None:
    row = person_row(record)
    assert row["login_uuid"] == record["login"]["uuid"]
    assert row["name_first"] == record["name"]["first"]
    assert row["street_number"] == record["location"]["street"]["number"]
    assert row["postcode"] == str(record["location"]["postcode"])
    assert row["latitude"] == float(record["location"]["coordinates"]["latitude"])
    assert row["dob_date"].tzinfo is not None and row["dob_age"] == record["dob"]["age"]
    assert row["id_value"] == record["id"]["value"]
    assert row["login_sha256"] == record["login"]["sha256"]
    assert row["nat"] == record["nat"]


def test_numbers_and_strings_both_occur_as_postcodes_and_coordinates(record: dict[str, Any]) -> None:
    record["location"]["postcode"] = 12345
    record["location"]["coordinates"] = {"latitude": -12.5, "longitude": "179.9999"}
    record["id"]["value"] = None
    row = person_row(record)
    assert (row["postcode"], row["latitude"], row["longitude"], row["id_value"]) == ("12345", -12.5, 179.9999, None)
    record["location"]["postcode"] = "T4Y 1A1"
    assert person_row(record)["postcode"] == "T4Y 1A1"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda r: r["login"].pop("uuid"), "login.uuid: missing"),
    (lambda r: r["login"].update(uuid=""), "login.uuid: missing"),
    (lambda r: r["login"].update(uuid="not-a-uuid"), "login.uuid: 'not-a-uuid' is not a UUID"),
    (lambda r: r["login"].update(uuid=42), "login.uuid: expected a string, got a number"),
    (lambda r: r.update(email="not-an-email"), "email: 'not-an-email' is not an email address"),
    (lambda r: r.pop("email"), "email: missing"),
    (lambda r: r["location"]["coordinates"].update(latitude="91.0"), "location.coordinates.latitude: 91.0 is not between -90 and 90"),
    (lambda r: r["location"]["coordinates"].update(longitude="east"), "location.coordinates.longitude: 'east' is not a number"),
    (lambda r: r["location"]["coordinates"].update(longitude="nan"), "location.coordinates.longitude: nan is not between"),
    (lambda r: r["dob"].update(age="thirty"), "dob.age: expected a whole number, got a string"),
    (lambda r: r["dob"].update(age=True), "dob.age: expected a whole number, got a boolean"),
    (lambda r: r["registered"].update(date="yesterday"), "registered.date: 'yesterday' is not an ISO 8601 date"),
    (lambda r: r.update(name="Jane Doe"), "name: expected an object, got a string"),
    (lambda r: r["name"].update(first=None), "name.first: expected a string, got null"),
    (lambda r: r["name"].update(last="  "), "name.last: empty"),
    (lambda r: r["location"].update(postcode=None), "location.postcode: expected a string or a number, got null"),
    (lambda r: r["location"]["street"].update(number="12b"), "location.street.number: expected a whole number"),
    (lambda r: r["name"].update(first="A" * 101), "name.first: longer than 100 characters"),
    (lambda r: r.update(phone="555\x000"), "phone: contains a NUL character"),
    (lambda r: r["name"].update(last="Bad\ud800"), "name.last: not valid Unicode text"),
    (lambda r: r["location"].pop("timezone"), "location.timezone: missing"),
])
def test_bad_records_are_refused_with_a_reason(record: dict[str, Any], change: Any, reason: str) -> None:
    change(record)
    with pytest.raises(InvalidRecord) as refused:
        person_row(record)
    assert str(refused.value).startswith(reason)


@pytest.mark.parametrize("value", [None, [], "x", 3])
def test_a_record_that_is_not_an_object_is_refused(value: Any) -> None:
    with pytest.raises(InvalidRecord, match="record: expected an object"):
        person_row(value)


# Sources and the cache ---------------------------------------------------------------------------

def test_sources_are_urls_or_json_files(tmp_path: Path) -> None:
    assert parse_source("https://randomuser.me/api/", files_dir=None) == Source("url", "https://randomuser.me")
    assert parse_source("http://127.0.0.1:8765", files_dir=None) == Source("url", "http://127.0.0.1:8765")
    assert parse_source("people-20.json", files_dir=SAMPLES) == Source("file", str(SAMPLES / "people-20.json"))
    assert parse_source(str(SAMPLES / "people-20.json"), files_dir=None).kind == "file"
    for refused in ["ftp://example.com", "https://example.com/api/?results=5", "http:///nohost",
                    "../samples/people-20.json", "/etc/passwd", "people-404.json", ".hidden.json", "", "a\x00b"]:
        with pytest.raises(SourceRefused):
            parse_source(refused, files_dir=SAMPLES)
    (tmp_path / "notes.txt").write_text("{}")
    with pytest.raises(SourceRefused):
        parse_source(str(tmp_path / "notes.txt"), files_dir=None)


def test_file_pages_are_slices_of_the_file(tmp_path: Path) -> None:
    source = parse_source("people-200.json", files_dir=SAMPLES)
    cache = PageCache(tmp_path)
    second = page_records(PageRequest(source, "any", 2, 50), cache)
    assert second == sample(200)[50:100]
    assert fetch_page(PageRequest(source, "any", 4, 60), cache, timeout=5, policy=LOOPBACK) == (20, False)
    assert not list(tmp_path.iterdir()), "file pages are not copied into the cache"


def test_api_pages_are_fetched_once_and_cached_by_request(tmp_path: Path) -> None:
    cache = PageCache(tmp_path / "cache")
    with RandomUserServer() as api:
        source = parse_source(api.url, files_dir=None)
        request = PageRequest(source, "seed-a", 2, 30)
        with pytest.raises(PageMissing):
            cache.load(request)
        assert fetch_page(request, cache, timeout=5, policy=LOOPBACK) == (30, True)
        assert fetch_page(request, cache, timeout=5, policy=LOOPBACK) == (30, False)
        assert fetch_page(PageRequest(source, "seed-a", 2, 30, "DE"), cache, timeout=5, policy=LOOPBACK)[1] is True
        assert fetch_page(PageRequest(source, "seed-b", 2, 30), cache, timeout=5, policy=LOOPBACK)[1] is True
        assert api.requests == [("seed-a", 2, 30, ""), ("seed-a", 2, 30, "DE"), ("seed-b", 2, 30, "")]
        people = cache.load(request)
        # the same person at the same position of a sequence, whatever the page size
        assert people[5] == api.person("seed-a", 35)
        assert people[0]["login"]["uuid"] == api.page("seed-a", 1, 60)["results"][30]["login"]["uuid"]
        assert len(list((tmp_path / "cache").glob("*.json"))) == 3


def test_fetch_errors_say_whether_a_retry_may_help(tmp_path: Path) -> None:
    cache = PageCache(tmp_path)
    with RandomUserServer() as api:
        source = parse_source(api.url, files_dir=None)
        api.fail_next(1, 503)
        with pytest.raises(SourceError) as busy:
            fetch_page(PageRequest(source, "s", 1, 10), cache, timeout=5, policy=LOOPBACK)
        assert busy.value.transient and "HTTP 503" in str(busy.value)
        api.fail_next(1, 404)
        with pytest.raises(SourceError) as missing:
            fetch_page(PageRequest(source, "s", 1, 10), cache, timeout=5, policy=LOOPBACK)
        assert not missing.value.transient
        api.cut_next(1)
        with pytest.raises(SourceError) as cut:
            fetch_page(PageRequest(source, "s", 1, 10), cache, timeout=5, policy=LOOPBACK)
        assert cut.value.transient and "not JSON" in str(cut.value)
        assert not cache.has(PageRequest(source, "s", 1, 10)), "a failed fetch caches nothing"
    # Nothing listens on a port just released (the stopped server's kept-alive handler
    # threads may still answer on theirs).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    down_source = parse_source(f"http://127.0.0.1:{free_port}", files_dir=None)
    with pytest.raises(SourceError) as down:
        fetch_page(PageRequest(down_source, "s", 1, 10), cache, timeout=2, policy=LOOPBACK)
    assert down.value.transient


# Planning --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "chunk", "preferred", "expected"), [
    (5000, 500, 1000, 1000), (5000, 300, 1000, 900), (5000, 2000, 1000, 2000), (20, 500, 1000, 20),
    (1_000_000, 5000, 1000, 5000), (50_000, 10, 1000, 1000), (7, 3, 1000, 7),
])
def test_pages_hold_whole_chunks(count: int, chunk: int, preferred: int, expected: int) -> None:
    assert page_size_for(count, chunk, preferred) == expected


@pytest.mark.parametrize(("count", "chunk", "page"), [(1000, 100, 1000), (1050, 100, 300), (7, 3, 7), (1, 1, 1)])
def test_chunks_cover_every_position_once(count: int, chunk: int, page: int) -> None:
    plan = plan_chunks(count, chunk, page)
    positions = [(c.page - 1) * page + c.page_offset + i for c in plan for i in range(c.size)]
    assert positions == list(range(count))
    assert all(c.size <= chunk and c.page_offset + c.size <= page for c in plan)
    assert [c.number for c in plan] == list(range(len(plan))) and chunk_count(count, chunk, page) == len(plan)


# The samples ----------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [20, 200, 1000, 5000])
def test_sample_files_are_valid_randomuser_pages(count: int) -> None:
    document = json.loads((SAMPLES / f"people-{count}.json").read_text(encoding="utf-8"))
    assert document["info"]["results"] == count and document["info"]["page"] == 1
    people = document["results"]
    assert len(people) == count
    rows = [person_row(p) for p in people]  # every sample person is valid
    assert len({r["login_uuid"] for r in rows}) == count
    assert people == sample(5000)[:count], "each file is the start of one sequence"


def test_samples_cover_many_nationalities_scripts_and_postcode_types() -> None:
    people = sample(5000)
    assert len({p["nat"] for p in people}) >= 20
    names = [p["name"]["first"] + p["name"]["last"] for p in people]
    assert sum(not name.isascii() for name in names) > 500
    scripts = "".join(names)
    assert any("\u0400" <= ch <= "\u04ff" for ch in scripts), "Cyrillic"
    assert any("\u0600" <= ch <= "\u06ff" for ch in scripts), "Persian"
    kinds = {type(p["location"]["postcode"]) for p in people}
    assert kinds == {int, str}
    assert any(p["id"]["value"] is None for p in people)


def test_the_generator_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("faker")
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    try:
        import make_samples
    finally:
        sys.path.remove(str(REPO / "tools"))
    make_samples.main(["--out", str(tmp_path / "a"), "--sizes", "20"])
    make_samples.main(["--out", str(tmp_path / "b"), "--sizes", "20"])
    first = (tmp_path / "a" / "people-20.json").read_bytes()
    assert first == (tmp_path / "b" / "people-20.json").read_bytes()
    shipped = json.loads((SAMPLES / "people-20.json").read_text(encoding="utf-8"))
    made = json.loads(first)
    if made["info"]["generator"] == shipped["info"]["generator"]:  # the same Faker version
        assert made == shipped
    assert all(person_row(p) for p in made["results"])


def test_the_quick_path_agrees_with_the_careful_one() -> None:
    from webapp.services.people_import.records import _careful_row, _fast_row

    people = sample(5000)
    quick = [_fast_row(p) for p in people]
    assert sum(row is None for row in quick) < 10, "almost every sample takes the quick path"
    assert all(row is None or row == _careful_row(p) for row, p in zip(quick, people))
