"""Placement: rendezvous ranking with bounded loads, and the plan's hysteresis."""

from __future__ import annotations

from optionsfeed.processing.placement import (
    Placement,
    PlacementSettings,
    ranking,
    rankings,
    spread,
)

UNIVERSE = [f"U{i}" for i in range(12)]
ST = PlacementSettings(standbys=1, settle_s=2.0, grace_s=0.5, linger_s=5.0)


def test_ranking_is_the_same_whatever_the_order_of_members() -> None:
    """Every processor ranks the same members the same way."""
    assert ranking("SPY", ["a", "b", "c"]) == ranking("SPY", ["c", "a", "b"])
    assert sorted(ranking("SPY", ["a", "b", "c"])) == ["a", "b", "c"]


def test_owners_are_balanced_within_one_underlying() -> None:
    """12 over 3 is 4 each; 5 over 2 is 3 and 2; 10 over 4 is 3,3,2,2, for any ids."""
    for n, members in ((12, ["p1", "p2", "p3"]), (5, ["x", "y"]), (10, list("abcd"))):
        for salt in range(20):
            ms = [f"{m}{salt}" for m in members]
            loads = sorted(len(v) for v in spread([f"U{i}" for i in range(n)], ms).values())
            assert loads[-1] - loads[0] <= 1, (n, salt, loads)


def test_a_member_leaving_moves_mostly_its_own_underlyings() -> None:
    """When one of three leaves, the two others keep what they owned but for a few."""
    three = rankings(UNIVERSE, ["a", "b", "c"])
    two = rankings(UNIVERSE, ["a", "b"])
    kept = [u for u in UNIVERSE if three[u][0] != "c" and two[u][0] == three[u][0]]
    stayed = [u for u in UNIVERSE if three[u][0] != "c"]
    assert len(kept) >= len(stayed) - 2
    # The standby of each underlying is the next one in its ranking, never the owner.
    assert all(r[1] != r[0] for r in three.values())


def test_the_preferred_takes_at_once_others_only_after_a_grace() -> None:
    """A free lease: its preferred processor takes it at once; its standby after grace_s;
    a processor that neither owns nor stands by after 3 x grace_s."""
    members = ["a", "b", "c"]
    r = rankings(UNIVERSE, members)
    u = UNIVERSE[0]
    first, second, third = r[u]
    plans = {}
    for me in members:
        p = Placement(me, ST)
        p.saw_members(members, 0.0)
        p.saw_free([u], [u], 10.0)
        plans[me] = (p, p.plan(UNIVERSE, set(), 10.0))
    assert u in plans[first][1].take
    assert u not in plans[second][1].take
    assert u in plans[second][1].ask_free
    assert u not in plans[third][1].take
    assert u in plans[second][0].plan(UNIVERSE, set(), 10.5).take
    p3 = plans[third][0]
    assert u not in p3.plan(UNIVERSE, set(), 11.0).take
    assert u in p3.plan(UNIVERSE, set(), 11.5).take


def test_only_the_owner_and_its_standby_price_an_underlying() -> None:
    """With three members each prices its own and those it stands by for: 2 of 3 shares."""
    members = ["a", "b", "c"]
    r = rankings(UNIVERSE, members)
    for me in members:
        p = Placement(me, ST)
        p.saw_members(members, 0.0)
        plan = p.plan(UNIVERSE, set(), 10.0)
        assert plan.process == {u for u in UNIVERSE if me in r[u][:2]}
    solo = Placement("a", PlacementSettings(standbys=0))
    solo.saw_members(members, 0.0)
    assert solo.plan(UNIVERSE, set(), 1.0).process == {u for u in UNIVERSE if r[u][0] == "a"}


def test_an_owner_hands_over_only_to_a_settled_preferred() -> None:
    """A joining preferred one gets its underlyings after settle_s of being seen, not
    before; one that drops out of sight and back starts settling again (no bounce)."""
    r = rankings(UNIVERSE, ["a", "b"])
    theirs = {u for u in UNIVERSE if r[u][0] == "b"}
    assert theirs
    a = Placement("a", ST)
    a.saw_members(["a"], 0.0)
    assert a.plan(UNIVERSE, set(UNIVERSE), 0.0).release == ()
    a.saw_members(["a", "b"], 1.0)
    assert a.plan(UNIVERSE, set(UNIVERSE), 2.9).release == ()
    a.saw_members(["a"], 3.0)  # briefly unsure: b missed its heartbeat
    a.saw_members(["a", "b"], 3.5)
    assert a.plan(UNIVERSE, set(UNIVERSE), 5.0).release == ()
    assert set(a.plan(UNIVERSE, set(UNIVERSE), 5.5).release) == theirs
    assert a.handovers == len(theirs)


def test_pricing_lingers_after_the_ranking_drops_an_underlying() -> None:
    """An underlying that a joining member takes from this one's top two is priced for
    linger_s more, then no longer."""
    r2 = rankings(UNIVERSE, ["a", "c"])
    r3 = rankings(UNIVERSE, ["a", "c", "d"])
    dropped = {u for u in UNIVERSE if "c" in r2[u][:2] and "c" not in r3[u][:2]}
    assert dropped
    p = Placement("c", ST)
    p.saw_members(["a", "c"], 0.0)
    assert p.plan(UNIVERSE, set(), 0.0).process == set(UNIVERSE)
    p.saw_members(["a", "c", "d"], 1.0)
    assert p.plan(UNIVERSE, set(), 4.9).process == set(UNIVERSE)
    assert p.plan(UNIVERSE, set(), 5.1).process == set(UNIVERSE) - dropped
