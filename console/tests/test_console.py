"""Each flow of the console as an operator uses it, in headless Chromium against a real
grantd (SQLite and PostgreSQL), then checked through gRPC."""

from __future__ import annotations

import os

import grpc
import pytest
from conftest import Grantd
from grantd_client import GrantdClient, Resource, audit_pb, directory_pb
from playwright.sync_api import Page, expect

READ, WRITE, SHARE = "documents:read", "documents:write", "documents:share"
F1 = Resource(type="folder", id="f1")


def seed(grantd: Grantd) -> None:
    """acme with alice (read org-wide, write and share on folder f1), bob and carol."""
    with grantd.client() as gd:
        gd.create_organization("acme", "Acme Inc.")
        for name in (READ, WRITE, SHARE):
            gd.create_permission(name)
        for user in ("auth0|alice", "bob", "carol"):
            gd.add_member("acme", user)
        gd.grant("acme", "auth0|alice", [READ])
        gd.grant("acme", "auth0|alice", [WRITE, SHARE], F1)
        gd.grant("acme", "bob", [READ], Resource(type="document", id="d1"))
        gd.grant("acme", "carol", [SHARE], F1)


def held(gd: GrantdClient, user: str) -> set[tuple[str, str, str]]:
    return {(g.permission_name, g.resource.type, g.resource.id) for g in gd.list_grants("acme", user)}


def changes(gd: GrantdClient) -> list[audit_pb.Change]:
    answer = gd.audit.ListChanges(audit_pb.ListChangesRequest(organization_id="acme", page_size=1000), **gd._kw())
    return list(answer.changes)


def open_member(page: Page, user: str) -> None:
    page.get_by_label("Organization", exact=True).select_option("acme")
    page.get_by_role("button", name=user, exact=True).click()
    expect(page.get_by_role("heading", name=f"{user} in acme")).to_be_visible()


def test_the_trash_icon_removes_one_permission_after_a_confirm(grantd: Grantd, page: Page) -> None:
    seed(grantd)
    page.goto(grantd.console_link("root", admin=True))
    expect(page.get_by_text("Signed in as root (administrator)")).to_be_visible()
    open_member(page, "auth0|alice")
    grants = page.get_by_role("list", name="Permissions").get_by_role("listitem")
    expect(grants).to_have_count(3)
    expect(grants.first).to_contain_text("granted by root")
    if grantd.backend == "sqlite" and os.environ.get("CONSOLE_SCREENSHOT"):
        page.set_viewport_size({"width": 900, "height": 640})
        page.screenshot(path=os.environ["CONSOLE_SCREENSHOT"])
        page.set_viewport_size({"width": 375, "height": 800})

    page.get_by_role("button", name="Remove documents:write on folder f1").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Remove documents:write on folder f1 from auth0|alice in acme?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(grants).to_have_count(3)

    page.get_by_role("button", name="Remove documents:write on folder f1").click()
    dialog.get_by_role("button", name="Remove", exact=True).click()
    expect(page.get_by_role("status").first).to_contain_text("Removed 1 permission from auth0|alice.")
    expect(grants).to_have_count(2)

    with grantd.client() as gd:
        assert held(gd, "auth0|alice") == {(READ, "organization", "acme"), (SHARE, "folder", "f1")}
        last = changes(gd)[-1]
        assert (last.kind, last.user_id, last.actor) == (audit_pb.CHANGE_KIND_GRANT_REMOVED, "auth0|alice", "root")


def test_several_permissions_go_in_one_request_and_new_ones_come_from_the_catalog(grantd: Grantd, page: Page) -> None:
    seed(grantd)
    page.goto(grantd.console_link("root", admin=True))
    open_member(page, "auth0|alice")
    page.get_by_label("Select documents:write on folder f1").check()
    page.get_by_label("Select documents:share on folder f1").check()
    page.get_by_role("button", name="Remove selected (2)").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("documents:write on folder f1; documents:share on folder f1")
    dialog.get_by_role("button", name="Remove", exact=True).click()
    expect(page.get_by_role("status").first).to_contain_text("Removed 2 permissions from auth0|alice.")

    with grantd.client() as gd:
        assert held(gd, "auth0|alice") == {(READ, "organization", "acme")}
        removals = [c for c in changes(gd) if c.kind == audit_pb.CHANGE_KIND_GRANT_REMOVED]
        assert len(removals) == 2 and removals[0].request_id == removals[1].request_id, "one request"

    catalog = page.get_by_role("group", name="Permissions")
    page.get_by_label("Search the catalog").fill("documents")
    catalog.get_by_role("checkbox", name="documents:read (held)").check()
    page.get_by_label("Search the catalog").fill("share")
    expect(catalog.get_by_role("checkbox")).to_have_count(1)
    catalog.get_by_role("checkbox", name="documents:share").check()
    page.get_by_role("button", name="Add 2 permissions").click()
    expect(page.get_by_role("status").first).to_contain_text(
        "Added documents:share; already held: documents:read (the whole organization)."
    )
    with grantd.client() as gd:
        assert held(gd, "auth0|alice") == {(READ, "organization", "acme"), (SHARE, "organization", "acme")}


def test_resource_access_and_membership_are_removed_with_what_goes_with_them(grantd: Grantd, page: Page) -> None:
    seed(grantd)
    page.goto(grantd.console_link("root", admin=True))
    page.get_by_label("Organization", exact=True).select_option("acme")
    page.get_by_role("tab", name="Resource access").click()
    page.get_by_label("Resource type").fill("folder")
    page.get_by_label("Resource id").fill("f1")
    page.get_by_label("All users").check()
    page.get_by_role("button", name="Remove access").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Remove every grant of every user on folder f1 in acme?")
    dialog.get_by_role("button", name="Remove access").click()
    expect(page.get_by_role("status").first).to_contain_text("Removed 3 grants of every user on folder f1.")
    with grantd.client() as gd:
        assert held(gd, "auth0|alice") == {(READ, "organization", "acme")}
        assert held(gd, "carol") == set()

    page.get_by_role("tab", name="Members").click()
    page.get_by_label("Search members").fill("bo")
    expect(page.get_by_text("1 of 3 members")).to_be_visible()
    page.get_by_role("button", name="bob", exact=True).click()
    page.get_by_role("button", name="Remove from organization").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Remove bob from acme? 1 grant in acme goes with the membership.")
    dialog.get_by_role("button", name="Remove from organization").click()
    expect(page.get_by_role("heading", name="Members of acme")).to_be_visible()
    expect(page.get_by_role("button", name="bob", exact=True)).to_have_count(0)
    with grantd.client() as gd:
        members = gd.directory.ListOrganizationMembers(
            directory_pb.ListOrganizationMembersRequest(organization_id="acme"), **gd._kw()
        ).members
        assert sorted(m.user_id for m in members) == ["auth0|alice", "carol"]
        assert held(gd, "bob") == set()


def test_check_names_the_matching_grant_and_changes_arrive_live(grantd: Grantd, page: Page) -> None:
    seed(grantd)
    page.goto(grantd.console_link("root", admin=True))
    page.get_by_label("Organization", exact=True).select_option("acme")
    page.get_by_role("tab", name="Check").click()
    page.get_by_label("User id").fill("auth0|alice")
    page.get_by_label("Permission").fill(WRITE)
    page.get_by_label("Resource type (empty: the organization)").fill("folder")
    page.get_by_label("Resource id").fill("f1")
    page.get_by_role("button", name="Check", exact=True).click()
    verdict = page.locator(".verdict")
    expect(verdict).to_contain_text("Allowed. Matched grant: documents:write on folder f1, granted by root")
    page.get_by_label("Resource type (empty: the organization)").fill("document")
    page.get_by_label("Resource id").fill("d9")
    page.get_by_role("button", name="Check", exact=True).click()
    expect(verdict).to_contain_text("Not allowed.")

    page.get_by_role("tab", name="Changes").click()
    feed = page.get_by_role("list", name="Changes").get_by_role("listitem")
    expect(feed.first).to_contain_text("carol was granted documents:share on folder f1")
    expect(page.get_by_text("Live: new changes appear at the top.")).to_be_visible()
    with grantd.client() as gd:
        gd.grant("acme", "carol", [READ])
    expect(feed.first).to_contain_text("carol was granted documents:read on the whole organization")
    expect(feed.first).to_contain_text("by root")


def test_a_viewer_is_offered_nothing_it_may_not_do(grantd: Grantd, page: Page) -> None:
    seed(grantd)
    with grantd.client() as gd:
        gd.grant("acme", "bob", ["view_org_users"])
    page.goto(grantd.console_link("bob"))
    expect(page.get_by_text("Signed in as bob")).to_be_visible()
    # bob belongs to one organization, which opens by itself.
    expect(page.get_by_role("heading", name="Members of acme")).to_be_visible()
    expect(page.get_by_role("tab", name="Resource access")).to_have_count(0)
    page.get_by_role("button", name="auth0|alice", exact=True).click()
    expect(page.get_by_role("list", name="Permissions").get_by_role("listitem")).to_have_count(3)
    expect(page.get_by_role("button", name="Remove documents:write on folder f1")).to_have_count(0)
    expect(page.get_by_role("checkbox")).to_have_count(0)
    expect(page.get_by_role("button", name="Remove from organization")).to_have_count(0)
    expect(page.get_by_role("heading", name="Add permissions")).to_have_count(0)
    # The server, not the page, decides: the same removal through gRPC is denied.
    with grantd.client("bob", admin=False) as gd:
        with pytest.raises(grpc.RpcError) as denied:
            gd.revoke("acme", "auth0|alice", [WRITE], F1)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_expired_token_is_told_so_and_asked_for_a_new_one(grantd: Grantd, page: Page) -> None:
    page.goto(f"http://{grantd.addr}/console/#token={grantd.expired_token('root')}")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Not signed in: the token is missing, expired or not accepted by this server.")
    expect(alert).to_contain_text("token has expired")
    expect(alert).to_contain_text("(Unauthenticated)")
    expect(page.get_by_label("Bearer token")).to_be_visible()
    # The token left the address bar at once, and a pasted good one signs in.
    assert "#token" not in page.url
    page.get_by_label("Bearer token").fill(grantd.token("root", admin=True))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Signed in as root (administrator)")).to_be_visible()


def test_everything_is_reachable_from_the_keyboard(grantd: Grantd, page: Page) -> None:
    seed(grantd)
    page.goto(grantd.console_link("root", admin=True))
    organization = page.get_by_label("Organization", exact=True)
    organization.focus()
    organization.select_option("acme")
    # From the organization picker, Tab walks the tabs and the member search to the members.
    member = page.get_by_role("button", name="auth0|alice", exact=True)
    for _ in range(10):
        page.keyboard.press("Tab")
        if member.evaluate("element => element === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the member")
    page.keyboard.press("Enter")
    trash = page.get_by_role("button", name="Remove documents:share on folder f1")
    trash.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    # The confirm opens on Cancel, so a stray Enter removes nothing; Escape closes it.
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    trash.focus()
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Remove", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").first).to_contain_text("Removed 1 permission from auth0|alice.")
    with grantd.client() as gd:
        assert (SHARE, "folder", "f1") not in held(gd, "auth0|alice")


def test_one_users_access_to_a_resource_goes_and_the_others_stays(grantd: Grantd, page: Page) -> None:
    seed(grantd)
    page.goto(grantd.console_link("root", admin=True))
    page.get_by_label("Organization", exact=True).select_option("acme")
    page.get_by_role("tab", name="Resource access").click()
    page.get_by_label("Resource type").fill("folder")
    page.get_by_label("Resource id").fill("f1")
    page.get_by_label("User id").fill("carol")
    page.get_by_role("button", name="Remove access").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove access").click()
    expect(page.get_by_role("status").first).to_contain_text("Removed 1 grant of carol on folder f1.")
    with grantd.client() as gd:
        assert held(gd, "carol") == set()
        assert held(gd, "auth0|alice") == {(READ, "organization", "acme"), (WRITE, "folder", "f1"), (SHARE, "folder", "f1")}


def test_the_change_feed_pages_back_to_the_first_change(grantd: Grantd, page: Page) -> None:
    seed(grantd)
    names = [f"reports:{i:02}" for i in range(60)]
    with grantd.client() as gd:
        for name in names:
            gd.create_permission(name)
        gd.grant("acme", "carol", names, Resource(type="report", id="r1"))
        total = len(changes(gd))
    page.goto(grantd.console_link("root", admin=True))
    page.get_by_label("Organization", exact=True).select_option("acme")
    page.get_by_role("tab", name="Changes").click()
    feed = page.get_by_role("list", name="Changes").get_by_role("listitem")
    expect(feed).to_have_count(50)
    expect(feed.first).to_contain_text("carol was granted reports:59 on report r1")
    page.get_by_role("button", name="Older changes").click()
    expect(feed).to_have_count(total)
    expect(feed.last).to_contain_text("organization created")
    expect(page.get_by_role("button", name="Older changes")).to_have_count(0)
