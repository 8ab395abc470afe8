"""``events console`` in a real headless Chromium, on the real broker: a group with lag and dead
letters is shown, a dead letter is re-driven from the page and handled, a replay is planned and
executed, and nothing is served without the token. Screenshots go to the module's tmp dir."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.console import handlers
from tests.console.conftest import TOKEN, World, stop
from tests.recovery.support import committed
from tests.support.waiting import wait_until

pytestmark = pytest.mark.kafka


def fetch(url: str, *, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_without_the_token_nothing_is_served_and_nothing_is_done(world: World, browser):
    # When a page, a JSON probe and an action are asked without the token
    page_status, page = fetch(world.url + "/")
    group_status, group = fetch(world.url + f"/groups/{handlers.GROUP}/dead-letters")
    action_status, _ = fetch(world.url + f"/groups/{handlers.GROUP}/redrive/execute",
                             data=b"confirm=yes&position=0:0")
    # Then each is refused, showing nothing of the groups
    assert page_status == 401 and "Sign in" in page and handlers.GROUP not in page
    assert group_status == 401 and "poison" not in group
    assert action_status in (400, 401)
    # and a wrong token does not sign in
    context = browser.new_context()
    wrong = context.new_page()
    wrong.goto(world.url + "/")
    wrong.fill("input[name=name]", "intruder")
    wrong.fill("input[name=token]", "not-the-token")
    response_status = []
    wrong.on("response", lambda r: response_status.append(r.status))
    wrong.click("button:has-text('Sign in')")
    wrong.wait_for_selector("text=Refused")
    assert 401 in response_status
    context.close()
    # while the token, as a bearer, is served
    status, body = fetch(world.url + "/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and handlers.GROUP in body
    assert TOKEN not in body


def test_the_groups_page_shows_the_group_its_lag_and_its_trend(world: World, page):
    # When the operator opens the console
    page.goto(world.url + "/")
    row = page.locator(f"tr[data-group='{handlers.GROUP}']")
    # Then the group is there, stopped, with Kafka's LAG (5 published after it stopped) and 2 dead letters
    assert row.locator("td.lag").inner_text() == "5"
    assert row.locator("a.dead-letters").inner_text() == "2"
    assert row.locator(".state").inner_text() in ("empty", "dead")

    # and the trend chart has data once a few measurements were taken
    def chart_points() -> int:
        page.reload()
        return int(page.locator(f"tr[data-group='{handlers.GROUP}'] svg.chart").get_attribute("data-points"))

    wait_until(lambda: chart_points() >= 3, 20, "three measurements in the chart", interval_s=0.3)
    assert page.locator(f"tr[data-group='{handlers.GROUP}'] svg.chart polyline").count() == 1
    page.screenshot(path=world.screens / "groups.png", full_page=True)

    # When the group's page is opened
    page.click(f"a:has-text('{handlers.GROUP}')")
    # Then each partition has its lag, summing to the group's, and its own chart
    lags = [int(cell) for cell in page.locator("table.partitions td.lag").all_inner_texts()]
    assert sum(lags) == 5 and len(lags) >= 2
    assert page.locator("table.partitions svg.chart").count() == len(lags)
    assert "No member" in page.inner_text("main")
    page.screenshot(path=world.screens / "group.png", full_page=True)


def test_dead_letters_are_listed_filtered_and_shown_with_their_event(world: World, page):
    # When the dead letters are opened
    page.goto(world.url + f"/groups/{handlers.GROUP}/dead-letters")
    rows = page.locator("table.letters tbody tr")
    # Then both are there, the error class on one line
    assert rows.count() == 2
    assert set(page.locator("table.letters td.nowrap[title]").all_inner_texts()) == {"MessageRejected"}
    # and a filter that matches nothing shows none, one that matches shows both
    page.select_option("select[name=event_type]", "app_was_created")
    page.fill("input[name=since]", "1h")
    page.click("button:has-text('Filter')")
    assert page.locator("table.letters tbody tr").count() == 2
    page.goto(world.url + f"/groups/{handlers.GROUP}/dead-letters?until=2000-01-01T00:00:00Z")
    assert page.locator("table.letters tbody tr").count() == 0
    page.screenshot(path=world.screens / "dead-letters.png", full_page=True)

    # When one is opened
    page.goto(world.url + f"/groups/{handlers.GROUP}/dead-letters")
    page.locator("table.letters tbody tr").first.locator("a").click()
    # Then its origin, error, stack trace and decoded event are shown
    facts = {name: page.inner_text(f"dd[data-fact='{name}']") for name in ("origin", "error class", "error")}
    assert facts["origin"].startswith(world.topic + "[")
    assert facts["error class"].endswith("MessageRejected") and "its tenant has no plan" in facts["error"]
    assert "Traceback" in page.inner_text("pre.stacktrace")
    event = json.loads(page.inner_text("pre.event"))
    assert event["app_id"].startswith("poison-") and event["event_id"] in {e.event_id for e in world.poison}
    page.screenshot(path=world.screens / "dead-letter.png", full_page=True)


def test_a_replay_is_planned_and_executed_from_the_page(world: World, page):
    # Given the stopped group, committed at the end of what it read
    before = committed(world.admin, world.group_id, world.topic, 2)
    # When a replay since the moment after the poison is planned
    page.goto(world.url + f"/groups/{handlers.GROUP}/replay")
    page.check("input[name=start][value=since]")
    page.fill("input[name=since]", world.since.isoformat())
    page.select_option("select[name=topic]", world.topic)
    page.click("button:has-text('Plan')")
    # Then the plan is a rewind of the 4 events read since then, nothing changed yet
    assert "Plan: rewind" in page.inner_text("#plan")
    assert "4 message(s)" in page.inner_text("#outcome") and "Nothing has changed yet" in page.inner_text("#outcome")
    assert committed(world.admin, world.group_id, world.topic, 2) == before
    page.screenshot(path=world.screens / "replay-plan.png", full_page=True)

    # When it is executed after the confirmation
    page.check("input[name=confirm]")
    page.click("button:has-text('Execute')")
    # Then the group's offsets are set back by those 4, and the action is logged with who and what
    assert "rewound" in page.inner_text("#result")
    after = committed(world.admin, world.group_id, world.topic, 2)
    assert sum(before) - sum(after) == 4
    wait_until(lambda: any("replay by tester" in line and handlers.GROUP in line for line in world.audit_lines()),
               10, "the audit line of the replay")


def test_a_dead_letter_is_redriven_from_the_page_and_handled(world: World, page):
    fixed, still_broken = world.poison
    # When one dead letter is ticked and a redrive previewed
    page.goto(world.url + f"/groups/{handlers.GROUP}/dead-letters")
    positions = page.locator("table.letters tbody tr").evaluate_all("rows => rows.map(r => r.dataset.position)")
    position = next(p for p in positions if fixed.event_id in fetch(
        world.url + f"/groups/{handlers.GROUP}/dead-letters/{p}", headers={"Authorization": f"Bearer {TOKEN}"})[1])
    page.check(f"input[name=position][value='{position}']")
    page.click("button:has-text('Preview redrive of the ticked')")
    # Then the preview sends nothing
    assert "1 dead letter(s) would be re-driven" in page.inner_text("#preview")
    page.screenshot(path=world.screens / "redrive-preview.png", full_page=True)

    # When it is confirmed
    page.check("input[name=confirm]")
    page.click("button:has-text('Re-drive')")
    # Then it is sent into the group's retry topic, and logged with who and what
    assert "Re-drove 1 dead letter(s)" in page.inner_text("#result")
    wait_until(lambda: any("redrive by tester" in line and f"positions={position}" in line
                           for line in world.audit_lines()), 10, "the audit line of the redrive")

    # When the group runs again with the bug fixed for that app
    group = world.start_group(CONSOLE_SAMPLE_FIXED=fixed.app_id)
    try:
        # Then it handles the re-driven event (and the 5 behind, and skips the 4 replayed)
        wait_until(lambda: len(handlers.effects(world.database_url)) == 10 or group.poll() is not None, 60,
                   "the re-driven event and the 5 behind it handled")
        handled = [event_id for event_id, _ in handlers.effects(world.database_url)]
        assert handled.count(fixed.event_id) == 1 and still_broken.event_id not in handled
        # and the console sees it catch up on its topic (the retry topic keeps a lag of 1, as Kafka's own tool
        # reports it: the redrive's transaction marker follows the copy), with its own counters from /metrics
        page.goto(world.url + f"/groups/{handlers.GROUP}")
        seen: list[str] = []

        def caught_up() -> bool:
            page.reload()
            rows = [r.split("\t") for r in page.locator("table.partitions tbody tr").all_inner_texts()]
            seen[:] = [page.inner_text("dl.facts"), *map(str, rows)]
            return (page.locator("h1 .state").inner_text() == "stable"
                    and all(r[4].strip() == "0" for r in rows if r[0].strip() == world.topic)
                    and page.inner_text("dd.in-flight").strip().isdigit())

        try:
            wait_until(caught_up, 30, "the console to show the group caught up", interval_s=0.3)
        except AssertionError:
            raise AssertionError(f"the console showed: {seen}") from None
        page.screenshot(path=world.screens / "group-caught-up.png", full_page=True)
    finally:
        stop(group)
    assert group.returncode == 0
