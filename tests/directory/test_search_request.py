"""Searches sent with a directly written request: the bytes are ldap3's own, anything
else goes through ldap3, and slapd answers them as it answers ldap3's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ldap3 import BASE, DEREF_ALWAYS, SUBTREE, Connection
from ldap3.operation.search import search_operation
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
from ldap3.utils.asn1 import encode

from careid_broker.directory import LdapDirectory, filters
from careid_broker.directory.search_request import Search, encode_filter, search_message

ATTRIBUTES = st.sampled_from(["mail", "cn", "objectClass", "careidOrgCode", "uid", "sn"])
ANY_TEXT = st.text(min_size=1, max_size=40)
# What the directory is asked for: typed text is trimmed before it gets here.
TRIMMED = ANY_TEXT.filter(lambda value: value == value.strip())


def filters_of(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Filters as `filters` writes them, with these values."""
    items = st.one_of(
        st.builds(filters.equals, ATTRIBUTES, values),
        st.builds(filters.contains, ATTRIBUTES, values),
        ATTRIBUTES.map(lambda name: f"({name}=*)"),
    )
    return st.recursive(
        items,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=4).map(lambda parts: filters.all_of(*parts)),
            st.lists(inner, min_size=1, max_size=4).map(filters.any_of),
            inner.map(lambda part: f"(!{part})"),
        ),
        max_leaves=8,
    )


def ldap3_bytes(message_id: int, search: Search) -> bytes:
    request = search_operation(
        search.base,
        search.search_filter,
        {0: BASE, 2: SUBTREE}[search.scope],
        DEREF_ALWAYS,
        list(search.attributes),
        search.size_limit,
        search.time_limit,
        False,
        True,  # auto_escape and auto_encode: ldap3's defaults
        True,
        None,
        validator=None,
        check_names=False,
    )
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("searchRequest", request)
    return bytes(encode(message))


def searches(values: st.SearchStrategy[str]) -> st.SearchStrategy[Search]:
    """Searches (base object or subtree) with filters as `filters` writes them."""
    return st.builds(
        Search,
        base=st.text(min_size=0, max_size=60),
        scope=st.sampled_from([0, 2]),
        size_limit=st.integers(min_value=0, max_value=100_000),
        time_limit=st.integers(min_value=0, max_value=3600),
        search_filter=filters_of(values),
        attributes=st.lists(st.sampled_from(["mail", "cn", "1.1", "careidUUID"]), max_size=4),
    )


MESSAGE_IDS = st.integers(min_value=1, max_value=2**31 - 1)


@settings(max_examples=300, deadline=None)
@given(search=searches(TRIMMED), message_id=MESSAGE_IDS)
def test_the_message_is_the_one_ldap3_would_send(search: Search, message_id: int) -> None:
    assert search_message(message_id, search) == ldap3_bytes(message_id, search)


@settings(max_examples=200, deadline=None)
@given(search=searches(ANY_TEXT), message_id=MESSAGE_IDS)
def test_any_value_is_sent_as_ldap3_sends_it_or_left_to_ldap3(
    search: Search, message_id: int
) -> None:
    ours = search_message(message_id, search)
    assert ours is None or ours == ldap3_bytes(message_id, search)


@pytest.mark.parametrize(
    "search_filter",
    [
        "(cn>=a)",
        "(cn<=a)",
        "(cn~=a)",
        "(cn:dn:=a)",
        "cn=a",
        "(cn=a)(sn=b)",
        "(&)",
        "(!(cn=a)(sn=b))",
        "(cn=a\\)",
        "(cn= a)",
        "(cn=a )",
        "( cn=a)",
        "(cn=a\\5)",
        "(cn=a**b)",
        "(cn=a",
        "(=a)",
    ],
)
def test_filters_outside_the_subset_are_left_to_ldap3(search_filter: str) -> None:
    assert encode_filter(search_filter) is None


def test_a_negative_limit_is_left_to_ldap3() -> None:
    fields = {"base": "", "scope": 2, "search_filter": "(cn=a)", "attributes": ["cn"]}
    assert search_message(1, Search(size_limit=-1, time_limit=0, **fields)) is None
    assert search_message(1, Search(size_limit=0, time_limit=-5, **fields)) is None


def test_lookups_go_out_without_ldap3_building_the_request(
    directory: LdapDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("Connection.search was used")

    monkeypatch.setattr(Connection, "search", refuse)
    alex = directory.find_account("alex.morgan@nhs.net")
    assert alex is not None and alex.care_identity_uuid == "555000000001"
    assert directory.find_care_identity("555000000001") is not None
    assert directory.find_account("nobody@nhs.net") is None
    assert [a.mail for a in directory.search_accounts("kim", ["Y00001"])] == ["kim.taylor@nhs.net"]
    assert directory.ping()


def test_a_filter_outside_the_subset_still_searches(
    directory: LdapDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[str] = []
    search = Connection.search

    def recorded(self: Connection, base: str, search_filter: str, *args: Any, **kw: Any) -> Any:
        used.append(search_filter)
        return search(self, base, search_filter, *args, **kw)

    monkeypatch.setattr(Connection, "search", recorded)
    connector = directory._connector  # noqa: SLF001 - the adapter's own transport
    found = connector.run(
        directory._service,  # noqa: SLF001
        lambda connection: connector.search(
            connection,
            base=directory.config.accounts_base,
            # White space around a value: ldap3 strips it, so ldap3 is left to send it.
            search_filter="(uid= kim.taylor )",
            attributes=["uid"],
            size_limit=50,
        ),
    )
    assert used == ["(uid= kim.taylor )"]
    assert [entry.values["uid"] for entry in found.entries] == [["kim.taylor"]]
