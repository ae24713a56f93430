"""deploy/grafana/edgefleet.json: a dashboard Grafana's sidecar can import, on real series."""

from tests.unit.deploy.sources import (
    dashboard,
    dashboard_expressions,
    exported_families,
    exported_series_names,
    metric_names,
)


def test_dashboard_reads_only_series_the_coordinator_exports() -> None:
    exported = exported_series_names() | {"up"}

    read = {
        name for expression in dashboard_expressions().values() for name in metric_names(expression)
    }

    assert read - exported == set()


def test_dashboard_shows_every_metric_the_coordinator_exports() -> None:
    families = exported_families()

    read = {
        name for expression in dashboard_expressions().values() for name in metric_names(expression)
    }

    assert {family for family, names in families.items() if not names & read} == set()


def test_panels_query_the_chosen_data_source_and_have_unique_ids() -> None:
    board = dashboard()
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]

    ids = [panel["id"] for panel in board["panels"]]

    assert len(ids) == len(set(ids))
    assert board["uid"] and board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panels_cover_what_operators_watch() -> None:
    titles = {panel["title"] for panel in dashboard()["panels"]}

    assert {
        "Live nodes by hardware class",
        "Lost nodes by hardware class",
        "Jobs by state",
        "Rounds closed by outcome",
        "Round duration",
        "Updates by result and reason",
        "Bytes in and out",
        "Planned batch size per node",
        "Predicted vs measured peak memory per node",
        "RPC latency p99 by method",
    } <= titles
