"""Projects: the visibility rule, the key field in stored policies, and grants."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from inferflux_core.auth.grants import check_key_within
from inferflux_core.auth.oidc import OidcVerifier
from inferflux_core.auth.principal import Principal
from inferflux_core.auth.projects import ProjectScope, sees
from inferflux_core.auth.scopes import ADMIN, INFERENCE, MODELS_READ
from inferflux_core.config import AdapterConfig, ModelConfig, OidcConfig
from inferflux_core.contracts import Policy
from inferflux_core.errors import AuthenticationError, ModelNotFoundError, PermissionDeniedError
from inferflux_core.testing.policy import key_record


@dataclass
class Served:
    """A served model, as far as projects care."""

    config: ModelConfig


def _principal(project: str | None, *scopes: str) -> Principal:
    return Principal("k", "api_key", frozenset(scopes or (INFERENCE, MODELS_READ)), project=project)


MODELS = {
    "open": Served(
        ModelConfig(
            name="open",
            adapters=[
                AdapterConfig(name="shared", source="s"),
                AdapterConfig(name="b-only", source="b", project="b"),
            ],
        )
    ),
    "a-model": Served(
        ModelConfig(name="a-model", project="a", adapters=[AdapterConfig(name="any", source="x")])
    ),
}


def test_a_project_key_sees_its_project_and_unscoped_models() -> None:
    scope = ProjectScope(MODELS)
    assert list(scope.names(_principal("a"))) == ["open", "open:shared", "a-model", "a-model:any"]
    assert list(scope.names(_principal("b"))) == ["open", "open:shared", "open:b-only"]
    # An unscoped adapter of a scoped model stays with its model's project.
    assert not scope.visible(_principal("b"), "a-model:any")


def test_keys_without_a_project_and_admins_see_everything() -> None:
    scope = ProjectScope(MODELS)
    everything = ["open", "open:shared", "open:b-only", "a-model", "a-model:any"]
    assert list(scope.names(_principal(None))) == everything
    assert list(scope.names(_principal("b", ADMIN))) == everything
    assert list(scope.names(None)) == everything
    assert sees(None, ("a", "b"))


def test_a_hidden_model_is_not_found_and_the_message_lists_only_visible_ones() -> None:
    scope = ProjectScope(MODELS)
    with pytest.raises(ModelNotFoundError) as caught:
        scope.require_visible(_principal("b"), "a-model")
    assert "available: open, open:shared, open:b-only" in str(caught.value)
    with pytest.raises(ModelNotFoundError) as missing:
        scope.require_visible(_principal("b"), "nothing")
    assert str(missing.value).replace("'nothing'", "") == str(caught.value).replace("'a-model'", "")
    scope.require_visible(_principal("a"), "a-model")
    scope.require_visible(_principal(None), "a-model")


def test_a_policy_stored_before_projects_still_loads() -> None:
    record = key_record(1)
    document = json.loads(Policy(keys={record.key_id: record}).to_json())
    del document["keys"][record.key_id]["project"]
    loaded = Policy.from_json(json.dumps(document).encode())
    assert loaded.keys[record.key_id].project is None


def test_a_project_key_grants_only_keys_of_its_project() -> None:
    caller = _principal("a", INFERENCE, MODELS_READ)
    policy = Policy()
    check_key_within(caller, key_record(1).model_copy(update={"project": "a"}), policy)
    for project in ("b", None):
        with pytest.raises(PermissionDeniedError) as caught:
            check_key_within(caller, key_record(2).model_copy(update={"project": project}), policy)
        assert caught.value.param == "project"


def test_project_names_are_checked() -> None:
    with pytest.raises(ValueError):
        key_record(1).model_validate({**key_record(1).model_dump(), "project": "a:b"})
    with pytest.raises(ValueError):
        ModelConfig(project="../x")


def test_an_oidc_project_claim_scopes_the_token_and_its_absence_is_refused() -> None:
    def verifier(**extra: Any) -> OidcVerifier:
        config = {"issuer": "https://idp.test", "audience": "inferflux", **extra}
        return OidcVerifier(OidcConfig.model_validate(config))

    assert verifier().project({"project": "a"}) is None
    claimed = verifier(project_claim="org.project")
    assert claimed.project({"org": {"project": "team-a"}}) == "team-a"
    for claims in ({}, {"org": {"project": "a/../b"}}, {"org": {"project": ["a"]}}):
        with pytest.raises(AuthenticationError):
            claimed.project(claims)
