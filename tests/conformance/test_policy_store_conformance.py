"""Both bundled policy stores pass the conformance kit."""

from __future__ import annotations

import pytest

from inferflux_core.testing import PolicyStoreConformance
from inferflux_plugins.policy import sealed
from inferflux_plugins.policy.encrypted import PASSPHRASE_ENV


class TestMemoryPolicyStore(PolicyStoreConformance):
    """``memory``: not persistent, so the persistence tests skip."""

    policy_store_name = "memory"


class TestEncryptedPolicyStore(PolicyStoreConformance):
    """``encrypted_file`` under a passphrase, with a cheap KDF (the KDF has its own tests)."""

    policy_store_name = "encrypted_file"
    policy_store_options = {"path": "{tmp}/policy.bin"}

    @pytest.fixture(autouse=True)
    def passphrase(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(PASSPHRASE_ENV, "conformance passphrase")
        monkeypatch.setattr(sealed, "DEFAULT_KDF", sealed.KdfParams(log2_n=10, r=8, p=1))


class TestPlaintextPolicyStore(PolicyStoreConformance):
    """``encrypted_file`` without a passphrase, in its explicit plaintext mode."""

    policy_store_name = "encrypted_file"
    policy_store_options = {"path": "{tmp}/policy.json", "allow_plaintext": True}

    @pytest.fixture(autouse=True)
    def no_passphrase(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
