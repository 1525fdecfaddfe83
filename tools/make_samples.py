"""Write the sample people files in samples/: randomuser.me's format, made up with Faker.

    .venv/bin/python tools/make_samples.py              # samples/people-{20,200,1000,5000}.json
    .venv/bin/python tools/make_samples.py --out DIR --sizes 20,50 --seed other

Deterministic: the same seed and Faker version give byte-identical files, and each file
is the first N people of one sequence (people-20 is the start of people-5000). People
come from randomuser's 21 nationalities with each country's Faker locale, so names,
streets and cities use that country's script and accents (Cyrillic, Persian, Turkish,
Nordic letters...). Numeric postcodes are written as JSON numbers for some countries and
strings for others, coordinates as strings, and `id.value` is null where randomuser has
none, as the real API does.

Faker is needed to regenerate the files (`pip install faker`), not to use them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REFERENCE_DATE = datetime(2026, 1, 1, tzinfo=UTC)  # ages are computed against this day
DEFAULT_SIZES = (20, 200, 1000, 5000)
DEFAULT_SEED = "gatehouse"

# nat: (Faker locale, country, id name (empty: value null), postcode as a number when numeric)
NATIONALITIES: dict[str, tuple[str, str, str, bool]] = {
    "AU": ("en_AU", "Australia", "TFN", True),
    "BR": ("pt_BR", "Brazil", "CPF", False),
    "CA": ("en_CA", "Canada", "SIN", False),
    "CH": ("de_CH", "Switzerland", "AVS", True),
    "DE": ("de_DE", "Germany", "SVNR", True),
    "DK": ("da_DK", "Denmark", "CPR", True),
    "ES": ("es_ES", "Spain", "DNI", True),
    "FI": ("fi_FI", "Finland", "HETU", True),
    "FR": ("fr_FR", "France", "INSEE", True),
    "GB": ("en_GB", "United Kingdom", "NINO", False),
    "IE": ("en_IE", "Ireland", "PPS", False),
    "IN": ("en_IN", "India", "UIDAI", True),
    "IR": ("fa_IR", "Iran", "", True),
    "MX": ("es_MX", "Mexico", "NSS", True),
    "NL": ("nl_NL", "Netherlands", "BSN", False),
    "NO": ("no_NO", "Norway", "FN", False),
    "NZ": ("en_NZ", "New Zealand", "", True),
    "RS": ("sr_BA", "Serbia", "SID", True),
    "TR": ("tr_TR", "Turkey", "", True),
    "UA": ("uk_UA", "Ukraine", "", False),
    "US": ("en_US", "United States", "SSN", True),
}
TITLES = {"female": ("Ms", "Miss", "Mrs", "Madame", "Mademoiselle"), "male": ("Mr", "Monsieur")}
TIMEZONES = [
    ("-12:00", "Eniwetok, Kwajalein"), ("-10:00", "Hawaii"), ("-8:00", "Pacific Time (US & Canada)"),
    ("-7:00", "Mountain Time (US & Canada)"), ("-6:00", "Central Time (US & Canada), Mexico City"),
    ("-5:00", "Eastern Time (US & Canada), Bogota, Lima"), ("-3:30", "Newfoundland"),
    ("-3:00", "Brazil, Buenos Aires, Georgetown"), ("0:00", "Western Europe Time, London, Lisbon, Casablanca"),
    ("+1:00", "Brussels, Copenhagen, Madrid, Paris"), ("+2:00", "Kaliningrad, South Africa"),
    ("+3:00", "Baghdad, Riyadh, Moscow, St. Petersburg"), ("+3:30", "Tehran"),
    ("+5:30", "Bombay, Calcutta, Madras, New Delhi"), ("+5:45", "Kathmandu"),
    ("+8:00", "Beijing, Perth, Singapore, Hong Kong"), ("+9:30", "Adelaide, Darwin"),
    ("+10:00", "Eastern Australia, Guam, Vladivostok"), ("+12:00", "Auckland, Wellington, Fiji, Kamchatka"),
]
ADJECTIVES = ("yellow", "silver", "brave", "lazy", "happy", "purple", "tiny", "heavy", "angry", "ticklish")
ANIMALS = ("peacock", "rabbit", "koala", "lion", "swan", "tiger", "goose", "panda", "frog", "bear", "dog")
PASSWORDS = ("addison", "sunshine", "qwerty12", "dragon", "monkey", "letmein", "shadow", "bailey", "maverick")


def _pick(fake: Any, names: tuple[str, ...]) -> str:
    for name in names:
        method = getattr(fake, name, None)
        if method is not None:
            try:
                return str(method())
            except (AttributeError, TypeError, ValueError):
                continue
    return ""


def _date_between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    span = int((end - start).total_seconds())
    moment = start + timedelta(seconds=rng.randrange(span), milliseconds=rng.randrange(1000))
    return moment


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _age(born: datetime) -> int:
    years = REFERENCE_DATE.year - born.year
    return years - ((REFERENCE_DATE.month, REFERENCE_DATE.day) < (born.month, born.day))


def _id_value(rng: random.Random, nat: str) -> str:
    digits = "".join(str(rng.randrange(10)) for _ in range(9))
    if nat == "US":
        return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"
    if nat == "GB":
        return f"{rng.choice('ABCEGHJKLMNPRSTWXYZ')}{rng.choice('ABCEGHJKLMNPRSTWXYZ')} {digits[:2]} {digits[2:4]} {digits[4:6]} {rng.choice('ABCD')}"
    return digits


def person(fakers: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    nat = rng.choice(sorted(NATIONALITIES))
    locale, country, id_name, numeric_postcode = NATIONALITIES[nat]
    fake = fakers[locale]
    gender = rng.choice(("female", "male"))
    first = _pick(fake, ("first_name_female",) if gender == "female" else ("first_name_male",)) or _pick(fake, ("first_name",))
    last = _pick(fake, ("last_name",))
    postcode: str | int = _pick(fake, ("postcode", "zipcode"))
    if numeric_postcode and isinstance(postcode, str) and postcode.isdigit() and not postcode.startswith("0"):
        postcode = int(postcode)
    password = rng.choice(PASSWORDS)
    salt = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(8))
    salted = (password + salt).encode()
    born = _date_between(rng, datetime(1945, 1, 1, tzinfo=UTC), datetime(2005, 1, 1, tzinfo=UTC))
    registered = _date_between(rng, datetime(2002, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    offset, description = rng.choice(TIMEZONES)
    picture = rng.randrange(100)
    folder = "women" if gender == "female" else "men"
    local_part = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
    return {
        "gender": gender,
        "name": {"title": rng.choice(TITLES[gender]), "first": first, "last": last},
        "location": {
            "street": {"number": rng.randint(1, 9999), "name": _pick(fake, ("street_name", "street_address"))},
            "city": _pick(fake, ("city", "city_name")),
            "state": _pick(fake, ("state", "administrative_unit", "region", "province", "county", "city")),
            "country": country,
            "postcode": postcode,
            "coordinates": {"latitude": f"{rng.uniform(-90, 90):.4f}", "longitude": f"{rng.uniform(-180, 180):.4f}"},
            "timezone": {"offset": offset, "description": description},
        },
        "email": f"{local_part}@example.com",
        "login": {
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "username": f"{rng.choice(ADJECTIVES)}{rng.choice(ANIMALS)}{rng.randint(100, 999)}",
            "password": password,
            "salt": salt,
            "md5": hashlib.md5(salted).hexdigest(),  # noqa: S324 - randomuser's format, fake data
            "sha1": hashlib.sha1(salted).hexdigest(),  # noqa: S324
            "sha256": hashlib.sha256(salted).hexdigest(),
        },
        "dob": {"date": _iso(born), "age": _age(born)},
        "registered": {"date": _iso(registered), "age": _age(registered)},
        "phone": _pick(fake, ("phone_number",)),
        "cell": _pick(fake, ("phone_number",)),
        "id": {"name": id_name, "value": _id_value(rng, nat) if id_name else None},
        "picture": {
            "large": f"https://randomuser.me/api/portraits/{folder}/{picture}.jpg",
            "medium": f"https://randomuser.me/api/portraits/med/{folder}/{picture}.jpg",
            "thumbnail": f"https://randomuser.me/api/portraits/thumb/{folder}/{picture}.jpg",
        },
        "nat": nat,
    }


def generate(count: int, seed: str) -> list[dict[str, Any]]:
    """The first `count` people of the sequence for `seed`."""
    from faker import Faker

    base = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    fakers = {}
    for index, (locale, *_rest) in enumerate(NATIONALITIES[nat] for nat in sorted(NATIONALITIES)):
        fake = Faker(locale)
        fake.seed_instance(base + index)
        fakers[locale] = fake
    rng = random.Random(base)
    return [person(fakers, rng) for _ in range(count)]


def document(people: list[dict[str, Any]], seed: str) -> dict[str, Any]:
    from faker import VERSION

    return {"results": people,
            "info": {"seed": seed, "results": len(people), "page": 1, "version": "1.4",
                     "generator": f"tools/make_samples.py with Faker {VERSION}"}}


def write(path: Path, people: list[dict[str, Any]], seed: str) -> None:
    indent = 2 if len(people) <= 20 else None
    separators = None if indent else (",", ":")
    text = json.dumps(document(people, seed), ensure_ascii=False, indent=indent, separators=separators)
    path.write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--seed", default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})
    people = generate(max(sizes), args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        target = args.out / f"people-{size}.json"
        write(target, people[:size], args.seed)
        print(f"wrote {target} ({size} people)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
