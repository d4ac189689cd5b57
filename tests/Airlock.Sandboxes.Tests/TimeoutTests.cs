using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests;

/// <summary>The supervisor's timeout under a <see cref="Microsoft.Extensions.Time.Testing.FakeTimeProvider"/>: kill, extend, pause, drain, reap.</summary>
public sealed class TimeoutTests
{
    private static readonly TimeSpan Second = TimeSpan.FromSeconds(1);

    [Fact(Timeout = 10_000)]
    public async Task A_sandbox_with_a_60_second_timeout_is_killed_at_60_seconds_and_not_before()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync(LifecycleHarness.Spec() with { TimeoutSeconds = 60 })).Record.SandboxId;

        await h.AdvanceAsync(TimeSpan.FromSeconds(59));
        await Task.Delay(50);
        Assert.Equal(SandboxState.Running, h.StateOf(id));
        Assert.True(h.Lifecycle.TryGetServing(id, out _));

        await h.AdvanceAsync(Second);
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Killed, "killed at the timeout");

        Assert.Single(h.AuditOf(id, AuditKinds.Timeout));
        Assert.True(h.Process.Instances[id].Killed);
        Assert.Contains(id, h.Process.Cleaned);
        Assert.Equal(0, h.InUse());
        Assert.Equal(h.Network.Creates, h.Network.Deletes);
        Assert.False(h.Lifecycle.TryGetServing(id, out _));
        Assert.Null(h.Store[id].AccessToken);
    }

    [Fact(Timeout = 10_000)]
    public async Task Setting_the_timeout_extends_it_from_now()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync(LifecycleHarness.Spec() with { TimeoutSeconds = 60 })).Record.SandboxId;
        await h.AdvanceAsync(TimeSpan.FromSeconds(30));

        await h.Lifecycle.SetTimeoutAsync(LifecycleHarness.Tenant, id, 90, CancellationToken.None);
        await h.AdvanceAsync(TimeSpan.FromSeconds(89)); // 119 s after the create: the old timeout is long gone
        await Task.Delay(50);
        Assert.Equal(SandboxState.Running, h.StateOf(id));
        Assert.Single(h.AuditOf(id, AuditKinds.TimeoutChanged));

        await h.AdvanceAsync(Second);
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Killed, "killed at the extended timeout");
        Assert.Single(h.AuditOf(id, AuditKinds.Timeout));
    }

    [Theory(Timeout = 10_000)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task OnTimeout_pause_pauses_at_the_timeout_with_the_sandboxs_keepMemory_and_the_reaper_ends_it_after_the_retention(bool keepMemory)
    {
        await using var h = new LifecycleHarness();
        var spec = LifecycleHarness.Spec(BoundaryKind.MicroVm) with { TimeoutSeconds = 60, OnTimeout = TimeoutAction.Pause, KeepMemory = keepMemory };
        var id = (await h.CreateAsync(spec)).Record.SandboxId;

        await h.AdvanceAsync(TimeSpan.FromSeconds(59));
        await Task.Delay(50);
        Assert.Empty(h.MicroVm.Pauses);

        await h.AdvanceAsync(Second);
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Paused, "paused at the timeout");
        Assert.Equal([(id, keepMemory)], h.MicroVm.Pauses.ToArray());
        var paused = await h.Lifecycle.ListAsync(LifecycleHarness.Tenant, [SandboxState.Paused], new Dictionary<string, string>(), CancellationToken.None);
        Assert.Equal(id, Assert.Single(paused).SandboxId);
        Assert.Contains(id, (await h.Lifecycle.ListAsync(LifecycleHarness.Tenant, null, new Dictionary<string, string>(), CancellationToken.None)).Select(r => r.SandboxId));
        Assert.Equal(0, h.InUse()); // paused to disk: nothing runs
        Assert.Empty(h.AuditOf(id, AuditKinds.Timeout));
        Assert.Single(h.AuditOf(id, AuditKinds.Pause));

        await h.AdvanceAsync(h.Options.PausedRetention - Second);
        Assert.Empty(await h.Lifecycle.ReapAsync(CancellationToken.None));
        Assert.Equal(SandboxState.Paused, h.StateOf(id));

        await h.AdvanceAsync(TimeSpan.FromSeconds(2));
        Assert.Equal([id], await h.Lifecycle.ReapAsync(CancellationToken.None));
        Assert.Equal(SandboxState.Killed, h.StateOf(id));
        Assert.Single(h.AuditOf(id, AuditKinds.Reaped));
        Assert.False(h.MicroVm.PausedStates.ContainsKey(id));
        Assert.Contains(id, h.MicroVm.Cleaned);
        Assert.Empty(await h.Lifecycle.ListAsync(LifecycleHarness.Tenant, null, new Dictionary<string, string>(), CancellationToken.None));
    }

    [Fact(Timeout = 10_000)]
    public async Task A_timeout_pause_waits_for_an_envd_request_in_flight_and_pauses_once_it_ends()
    {
        await using var h = new LifecycleHarness(o => o with { TimeoutPauseGrace = TimeSpan.FromSeconds(10) });
        var id = (await h.CreateAsync(LifecycleHarness.Spec() with { TimeoutSeconds = 60, OnTimeout = TimeoutAction.Pause })).Record.SandboxId;
        var request = h.Lifecycle.EnterActivity(id);

        await h.AdvanceAsync(TimeSpan.FromSeconds(60));
        await h.AdvanceAsync(TimeSpan.FromSeconds(5), TimeSpan.FromMilliseconds(100));
        Assert.Equal(SandboxState.Running, h.StateOf(id));
        Assert.Empty(h.Process.Pauses);
        Assert.False(h.Lifecycle.TryGetServing(id, out _)); // draining: no new envd request is admitted

        request.Dispose();
        await h.AdvanceAsync(TimeSpan.FromMilliseconds(500), TimeSpan.FromMilliseconds(100));
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Paused, "paused once the request ended");

        Assert.Equal([(id, false)], h.Process.Pauses.ToArray());
        var pause = Assert.Single(h.AuditOf(id, AuditKinds.Pause));
        Assert.Contains("\"reason\":\"timeout\"", pause.Data, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_timeout_pause_cuts_a_request_still_in_flight_after_the_grace()
    {
        await using var h = new LifecycleHarness(o => o with { TimeoutPauseGrace = TimeSpan.FromSeconds(2) });
        var id = (await h.CreateAsync(LifecycleHarness.Spec() with { TimeoutSeconds = 60, OnTimeout = TimeoutAction.Pause })).Record.SandboxId;
        using var request = h.Lifecycle.EnterActivity(id);

        await h.AdvanceAsync(TimeSpan.FromSeconds(60));
        await h.AdvanceAsync(TimeSpan.FromSeconds(1.5), TimeSpan.FromMilliseconds(100));
        Assert.Equal(SandboxState.Running, h.StateOf(id));

        await h.AdvanceAsync(TimeSpan.FromSeconds(1), TimeSpan.FromMilliseconds(100));
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Paused, "paused after the grace");
        Assert.Contains("still in flight", Assert.Single(h.AuditOf(id, AuditKinds.Pause)).Data, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_timeout_extended_while_draining_keeps_the_sandbox_running()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync(LifecycleHarness.Spec() with { TimeoutSeconds = 60, OnTimeout = TimeoutAction.Pause })).Record.SandboxId;
        var request = h.Lifecycle.EnterActivity(id);
        await h.AdvanceAsync(TimeSpan.FromSeconds(60));

        await h.Lifecycle.SetTimeoutAsync(LifecycleHarness.Tenant, id, 60, CancellationToken.None);
        request.Dispose();
        await h.AdvanceAsync(TimeSpan.FromSeconds(1), TimeSpan.FromMilliseconds(100));

        await LifecycleHarness.EventuallyAsync(() => h.Lifecycle.TryGetServing(id, out _), "serving again");
        Assert.Equal(SandboxState.Running, h.StateOf(id));
        Assert.Empty(h.Process.Pauses);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_sandbox_paused_by_request_while_its_timeout_pause_drains_stays_paused_with_its_saved_state()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync(LifecycleHarness.Spec() with { TimeoutSeconds = 60, OnTimeout = TimeoutAction.Pause })).Record.SandboxId;
        var request = h.Lifecycle.EnterActivity(id);
        await h.AdvanceAsync(TimeSpan.FromSeconds(60)); // the timeout pause now waits for the request

        await h.Lifecycle.PauseAsync(LifecycleHarness.Tenant, id, new PauseSpec(), CancellationToken.None);
        request.Dispose();
        await h.AdvanceAsync(TimeSpan.FromSeconds(1), TimeSpan.FromMilliseconds(100));
        await Task.Delay(100);

        Assert.Equal(SandboxState.Paused, h.StateOf(id));
        Assert.True(h.Process.PausedStates.ContainsKey(id));
        Assert.DoesNotContain(id, h.Process.Cleaned);
        Assert.Empty(h.AuditOf(id, AuditKinds.Timeout));
        Assert.True((await h.Lifecycle.ResumeAsync(LifecycleHarness.Tenant, id, new ResumeSpec(), CancellationToken.None)).Resumed);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_pause_that_fails_at_the_timeout_kills_the_sandbox_instead()
    {
        await using var h = new LifecycleHarness();
        h.Process.PauseFails = new IOException("no space left on device");
        var id = (await h.CreateAsync(LifecycleHarness.Spec() with { TimeoutSeconds = 60, OnTimeout = TimeoutAction.Pause })).Record.SandboxId;

        await h.AdvanceAsync(TimeSpan.FromSeconds(60));
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Killed, "killed after the failed pause");
        await h.AdvanceAsync(TimeSpan.FromSeconds(1)); // a timer re-armed by the failed pause fires: nothing changes

        Assert.Equal(SandboxState.Killed, h.StateOf(id));
        Assert.Single(h.AuditOf(id, AuditKinds.Timeout));
        Assert.NotEmpty(h.AuditOf(id, AuditKinds.PauseFailed));
        Assert.True(h.Process.Instances[id].Killed);
        Assert.Equal(0, h.InUse());
        Assert.Equal(h.Network.Creates, h.Network.Deletes);
    }

    [Fact(Timeout = 10_000)]
    public async Task An_entry_process_that_exits_on_its_own_fails_the_sandbox()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;

        h.Process.Instances[id].ExitSource.SetResult("exit status 137");
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Failed, "failed after the exit");

        Assert.Contains("exit status 137", h.Store[id].FailureReason, StringComparison.Ordinal);
        Assert.Single(h.AuditOf(id, AuditKinds.Failed));
        Assert.Equal(0, h.InUse());
    }
}
