using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests;

public sealed class ReconcileTests
{
    [Theory(Timeout = 10_000)]
    [InlineData(SandboxState.Running, true, false, false, "Readopt")]
    [InlineData(SandboxState.Running, true, true, false, "Readopt")]
    [InlineData(SandboxState.Pausing, true, false, true, "Readopt")]
    [InlineData(SandboxState.Resuming, true, false, false, "Readopt")]
    [InlineData(SandboxState.Paused, true, true, false, "ReadoptFrozen")]
    [InlineData(SandboxState.Paused, false, false, true, "KeepPaused")]
    [InlineData(SandboxState.Pausing, false, false, true, "KeepPaused")]
    [InlineData(SandboxState.Resuming, false, false, true, "KeepPaused")]
    [InlineData(SandboxState.Paused, false, false, false, "MarkFailed")]
    [InlineData(SandboxState.Running, false, false, false, "MarkFailed")]
    [InlineData(SandboxState.Running, false, false, true, "MarkFailed")]
    [InlineData(SandboxState.Creating, false, false, false, "MarkFailed")]
    [InlineData(SandboxState.Creating, false, false, true, "MarkFailed")]
    public Task Reconcile_decides_by_state_survival_freezing_and_saved_state(SandboxState state, bool survived, bool frozen, bool pausedStateComplete, string expected)
    {
        var record = new SandboxRecord
        {
            SandboxId = SandboxIds.New(),
            TenantId = LifecycleHarness.Tenant,
            TemplateId = "base",
            Boundary = BoundaryKind.Container,
            State = state,
            CreatedAt = DateTimeOffset.UnixEpoch,
            EndAt = DateTimeOffset.UnixEpoch,
            AccessTokenHash = "",
        };

        var action = SandboxReconciler.Decide(record, survived, frozen, pausedStateComplete);

        Assert.Equal(expected, action.ToString());
        return Task.CompletedTask; // xunit's timeout needs a task
    }

    [Fact(Timeout = 15_000)]
    public async Task Reconcile_readopts_survivors_keeps_paused_fails_the_lost_and_leaves_another_nodes_sandbox_untouched()
    {
        await using var h = new LifecycleHarness();
        var survivor = h.Seeded(SandboxState.Running);
        var lost = h.Seeded(SandboxState.Running);
        var creating = h.Seeded(SandboxState.Creating);
        var paused = h.Seeded(SandboxState.Paused, withNetwork: false);
        var foreign = h.Seeded(SandboxState.Running, nodeId: "node-b");
        var foreignPaused = h.Seeded(SandboxState.Paused, nodeId: "node-b", withNetwork: false);
        foreach (var record in new[] { survivor, lost, creating, paused, foreign, foreignPaused })
        {
            h.Store.Seed(record);
        }

        h.Process.Survivors[survivor.SandboxId] = h.Process.NewInstance(survivor.SandboxId);
        h.Process.Survivors[foreign.SandboxId] = h.Process.NewInstance(foreign.SandboxId); // same host: its processes are visible here
        h.Process.PausedStates[paused.SandboxId] = false;
        h.Process.PausedStates[foreignPaused.SandboxId] = false;
        foreach (var id in new[] { survivor.SandboxId, lost.SandboxId, foreign.SandboxId })
        {
            h.Process.Leftovers.Add(id);
            h.Network.Leftovers.Add(id);
        }

        var actions = await h.Lifecycle.ReconcileAsync(CancellationToken.None);

        // This node's: the survivor runs on (supervised, its quota held), the paused stays paused, the rest failed.
        Assert.Equal(SandboxState.Running, h.StateOf(survivor.SandboxId));
        Assert.True(h.Lifecycle.TryGetServing(survivor.SandboxId, out _));
        Assert.Equal(1, h.InUse());
        Assert.Equal(SandboxState.Paused, h.StateOf(paused.SandboxId));
        Assert.True(h.Process.PausedStates.ContainsKey(paused.SandboxId));
        Assert.Equal(SandboxState.Failed, h.StateOf(lost.SandboxId));
        Assert.Equal(SandboxState.Failed, h.StateOf(creating.SandboxId));
        Assert.Contains(lost.SandboxId, h.Process.Cleaned);
        Assert.Contains(lost.SandboxId, h.Network.LeftoversDeleted);
        Assert.DoesNotContain(survivor.SandboxId, h.Process.Cleaned);
        Assert.DoesNotContain(survivor.SandboxId, h.Network.LeftoversDeleted);
        Assert.Single(h.AuditOf(lost.SandboxId, AuditKinds.Failed));
        Assert.Single(h.Store.Audit, a => a.Kind == AuditKinds.Reconcile);

        // Another node's: not read as ours, not adopted, not cleaned, not audited, its host resources left alone.
        foreach (var other in new[] { foreign, foreignPaused })
        {
            Assert.Same(other, h.Store[other.SandboxId]);
            Assert.DoesNotContain(other.SandboxId, h.Process.AdoptAsked);
            Assert.DoesNotContain(other.SandboxId, h.Process.Cleaned);
            Assert.DoesNotContain(other.SandboxId, h.Network.LeftoversDeleted);
            Assert.DoesNotContain(h.Store.Audit, a => a.SandboxId == other.SandboxId);
            Assert.DoesNotContain(actions, a => a.Contains(other.SandboxId, StringComparison.Ordinal));
            Assert.False(h.Lifecycle.TryGetServing(other.SandboxId, out _));
        }

        Assert.True(h.Process.PausedStates.ContainsKey(foreignPaused.SandboxId));
        Assert.Equal(1, h.InUse());
    }

    [Fact(Timeout = 15_000)]
    public async Task A_readopted_sandbox_is_killed_at_its_stored_timeout()
    {
        await using var h = new LifecycleHarness();
        var survivor = h.Seeded(SandboxState.Running) with { EndAt = new DateTimeOffset(2025, 6, 1, 12, 1, 0, TimeSpan.Zero) };
        h.Store.Seed(survivor);
        h.Process.Survivors[survivor.SandboxId] = h.Process.NewInstance(survivor.SandboxId);
        await h.Lifecycle.ReconcileAsync(CancellationToken.None);

        await h.AdvanceAsync(TimeSpan.FromSeconds(59));
        await Task.Delay(50);
        Assert.Equal(SandboxState.Running, h.StateOf(survivor.SandboxId));
        await h.AdvanceAsync(TimeSpan.FromSeconds(1));

        await LifecycleHarness.EventuallyAsync(() => h.StateOf(survivor.SandboxId) == SandboxState.Killed, "killed at its stored timeout");
        Assert.Equal(0, h.InUse());
    }

    [Fact(Timeout = 15_000)]
    public async Task The_reaper_leaves_another_nodes_paused_sandbox_alone()
    {
        await using var h = new LifecycleHarness();
        var foreign = h.Seeded(SandboxState.Paused, nodeId: "node-b", withNetwork: false) with { PausedAt = new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.Zero) };
        var ours = h.Seeded(SandboxState.Paused, withNetwork: false) with { PausedAt = new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.Zero) };
        h.Store.Seed(foreign);
        h.Store.Seed(ours);
        h.Process.PausedStates[foreign.SandboxId] = false;
        h.Process.PausedStates[ours.SandboxId] = false;

        var reaped = await h.Lifecycle.ReapAsync(CancellationToken.None);

        Assert.Equal([ours.SandboxId], reaped);
        Assert.Same(foreign, h.Store[foreign.SandboxId]);
        Assert.True(h.Process.PausedStates.ContainsKey(foreign.SandboxId));
    }
}
