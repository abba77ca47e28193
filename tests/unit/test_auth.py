"""Bearer tokens -> principals from an access file."""

import hashlib

import pytest

from plugwatch.web.auth import Access, AuthError


@pytest.fixture
def access(tmp_path):
    path = tmp_path / "access.yaml"
    digest = hashlib.sha256(b"s3cret-token").hexdigest()
    path.write_text(
        f"principals:\n  - name: alice\n    token_sha256: {digest}\n    roles: [ops]\n    tenants: [t1]\n"
    )
    return Access.from_file(path)


def test_known_token_maps_to_principal(access):
    principal = access.authenticate("Bearer s3cret-token")
    assert principal.name == "alice"
    assert principal.may_see_tenant("t1") and not principal.may_see_tenant("t2")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer wrong"])
def test_missing_or_wrong_token_is_401(access, header):
    with pytest.raises(AuthError) as err:
        access.authenticate(header)
    assert err.value.status == 401


def test_missing_role_is_403(access):
    with pytest.raises(AuthError) as err:
        access.require("Bearer s3cret-token", "security")
    assert err.value.status == 403


def test_unknown_role_in_file_is_refused(tmp_path):
    path = tmp_path / "access.yaml"
    path.write_text(f"principals:\n  - name: x\n    token_sha256: '{'a' * 64}'\n    roles: [root]\n")
    with pytest.raises(ValueError, match="unknown roles"):
        Access.from_file(path)


def test_shipped_access_file_loads():
    from plugwatch.settings import Settings

    access = Access.from_file(Settings().access_path)
    assert access.authenticate("Bearer plugwatch-dev-token").name == "local-dev"
