"""``installed-app-provisioner`` and ``site-provisioner``: a new app's installed-app and site records."""

from sqlalchemy import select

from dify_events.consumers.domain import InstalledApp, Site
from dify_events.consumers.handlers.installed_app_provisioner import create_installed_app
from dify_events.consumers.handlers.site_provisioner import CODE_ALPHABET, CODE_LENGTH, create_site_record
from dify_events.schemas.events import AppWasCreated


def app_created(app_id="a1", tenant_id="t1", **fields) -> AppWasCreated:
    return AppWasCreated(tenant_id=tenant_id, app_id=app_id, mode="chat", name=f"App {app_id}", created_by="acc1",
                         **fields)


def test_the_owning_tenant_gets_one_installed_app_even_when_run_twice(handle, db):
    # Given an app_was_created event
    event = app_created()
    # When the provisioner handles it twice
    handle(create_installed_app, event, event)
    # Then the owning tenant has exactly one installed-app record of the app, owned by itself
    with db() as s:
        rows = s.scalars(select(InstalledApp)).all()
    assert [(r.tenant_id, r.app_id, r.app_owner_tenant_id) for r in rows] == [("t1", "a1", "t1")]
    assert rows[0].created_at == event.occurred_at


def test_the_app_gets_one_site_with_a_code_even_when_run_twice(handle, db):
    # Given an app_was_created event with an icon and a description
    event = app_created(icon_type="emoji", icon="🤖", icon_background="#FFEAD5", description="Answers questions")
    # When the site provisioner handles it twice
    handle(create_site_record, event)
    with db() as s:
        first_code = s.scalar(select(Site.code))
    handle(create_site_record, event)
    # Then the app has one site, titled and decorated like the app (without its description, as
    # Dify's receiver leaves it), whose code did not change
    with db() as s:
        sites = s.scalars(select(Site)).all()
    assert len(sites) == 1
    site = sites[0]
    assert (site.app_id, site.title, site.icon, site.icon_background, site.description) == (
        "a1", "App a1", "🤖", "#FFEAD5", "")
    assert site.code == first_code and len(site.code) == CODE_LENGTH and set(site.code) <= set(CODE_ALPHABET)
    assert site.customize_token_strategy == "not_allow" and site.created_by == "acc1"


def test_every_app_gets_its_own_code(handle, db):
    # Given fifty new apps
    events = [app_created(app_id=f"a{i}") for i in range(50)]
    # When their sites are provisioned
    handle(create_site_record, *events)
    # Then there are fifty sites with fifty distinct codes
    with db() as s:
        codes = s.scalars(select(Site.code)).all()
    assert len(codes) == 50 and len(set(codes)) == 50
