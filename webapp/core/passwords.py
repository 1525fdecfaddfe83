"""Password hashing with argon2id: the library's recommended parameters, or (for the test
suite only, and refused in production) light ones that take a millisecond instead of a fifth
of a second. Either way a hash says its own parameters: verifying reads them from the hash,
and a sign-in upgrades a hash made with weaker ones (`needs_rehash`)."""

from __future__ import annotations

from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

HashingCost = Literal["recommended", "light"]
_COSTS: dict[str, dict[str, int]] = {
    "recommended": {},  # argon2-cffi's RFC 9106 low-memory profile
    "light": {"time_cost": 1, "memory_cost": 1024, "parallelism": 1},
}
_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 12


def use_cost(cost: HashingCost) -> None:
    """Hash new passwords with these parameters from now on (the PASSWORD_HASHING setting)."""
    global _hasher
    _hasher = PasswordHasher(**_COSTS[cost])


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; False for a wrong password or an unusable hash."""
    if not password_hash:
        # Spend the same time as a real check so unknown accounts are not told apart.
        _hasher.hash(password)
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
