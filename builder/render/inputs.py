"""Values rendering needs that are not in the recipe itself: hashes and keys, resolved at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostKey:
    private_openssh: str
    public_line: str


@dataclass(frozen=True)
class RenderInputs:
    host_key: HostKey
    # user name -> crypt hash, or None for "no password" (key logins only)
    password_hashes: dict[str, str | None] = field(default_factory=dict)
    root_hash: str | None = None
    # user name -> extra authorized keys (the generated admin key when the recipe gives none)
    extra_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def keys_for(self, user: str, recipe_keys: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*recipe_keys, *self.extra_keys.get(user, ()))))
