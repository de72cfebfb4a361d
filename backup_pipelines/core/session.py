"""What every command opens first: the repository, the keys and the catalog."""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import Catalog
from .codec import Codec, codec_for
from .config import Config
from .crypto import Keyring, load_key_file
from .repository import Repository, open_repository


def load_keyring(cfg: Config) -> Keyring:
    r = cfg.repository
    current = load_key_file(r.encryption_key_file) if r.encryption_key_file else None
    return Keyring(current, [load_key_file(p) for p in r.decryption_key_files])


@dataclass
class Session:
    config: Config
    repo: Repository
    keyring: Keyring
    catalog: Catalog

    @classmethod
    def open(cls, config: Config) -> Session:
        keyring = load_keyring(config)
        repo = open_repository(config.repository)
        return cls(config, repo, keyring, Catalog(repo, keyring, lease_seconds=config.lease_seconds))

    @property
    def codec(self) -> Codec:
        r = self.config.repository
        return codec_for(r.compression, self.keyring, r.compression_level, r.compression_threads)

    def close(self) -> None:
        self.repo.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
