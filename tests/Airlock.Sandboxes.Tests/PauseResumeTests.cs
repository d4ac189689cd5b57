using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests;

public sealed class PauseResumeTests
{
    private const string T = LifecycleHarness.Tenant;

    private static Task PauseAsync(LifecycleHarness h, string id, PauseSpec? spec = null) =>
        h.Lifecycle.PauseAsync(T, id, spec ?? new PauseSpec(), CancellationToken.None);

    private static Task<SandboxHandle> ResumeAsync(LifecycleHarness h, string id, ResumeSpec? spec = null) =>
        h.Lifecycle.ResumeAsync(T, id, spec ?? new ResumeSpec(), CancellationToken.None);

    [Fact(Timeout = 10_000)]
    public async Task A_paused_sandbox_gives_its_quota_back_and_a_resume_takes_it_again_or_is_refused_and_stays_paused()
    {
        await using var h = new LifecycleHarness(o => o with { MaxSandboxesPerTenant = 1 });
        var first = await h.CreateAsync();
        var id = first.Record.SandboxId;

        await PauseAsync(h, id);
        Assert.Equal(SandboxState.Paused, h.StateOf(id));
        Assert.Equal(0, h.InUse());
        Assert.Equal(h.Network.Creates, h.Network.Deletes); // a paused sandbox keeps no network

        var second = await h.CreateAsync();
        var refused = await Assert.ThrowsAsync<SandboxException>(() => ResumeAsync(h, id));
        Assert.Equal(SandboxErrorKind.QuotaExceeded, refused.Kind);
        Assert.Equal(SandboxState.Paused, h.StateOf(id));
        Assert.True(h.Process.PausedStates.ContainsKey(id));
        Assert.Empty(h.Process.Resumes);
        Assert.Equal(1, h.InUse());

        await h.Lifecycle.KillAsync(T, second.Record.SandboxId, CancellationToken.None);
        var resumed = await ResumeAsync(h, id);

        Assert.True(resumed.Resumed);
        Assert.Equal(first.AccessToken, resumed.AccessToken);
        Assert.Equal(SandboxState.Running, h.StateOf(id));
        Assert.Equal(1, h.InUse());
        Assert.False(h.Process.PausedStates.ContainsKey(id)); // the saved state is discarded once it runs again
        Assert.Contains(h.Agent.Requests, r => r.StartsWith("POST ", StringComparison.Ordinal) && r.EndsWith("/SetIdentity", StringComparison.Ordinal));
        Assert.True(h.Lifecycle.TryGetServing(id, out _));
        Assert.Single(h.AuditOf(id, AuditKinds.Resume));
    }

    [Fact(Timeout = 10_000)]
    public async Task A_resumed_sandbox_is_supervised_again_and_killed_at_its_new_timeout()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;
        await PauseAsync(h, id);

        await ResumeAsync(h, id, new ResumeSpec { TimeoutSeconds = 30 });
        await h.AdvanceAsync(TimeSpan.FromSeconds(29));
        await Task.Delay(50);
        Assert.Equal(SandboxState.Running, h.StateOf(id));
        await h.AdvanceAsync(TimeSpan.FromSeconds(1));

        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Killed, "killed at the resumed timeout");
        Assert.Equal(0, h.InUse());
    }

    [Fact(Timeout = 10_000)]
    public async Task Pausing_a_paused_sandbox_is_a_conflict()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;
        await PauseAsync(h, id);

        var ex = await Assert.ThrowsAsync<SandboxException>(() => PauseAsync(h, id));

        Assert.Equal(SandboxErrorKind.Conflict, ex.Kind);
        Assert.Single(h.Process.Pauses);
        Assert.Equal(SandboxState.Paused, h.StateOf(id));
    }

    [Fact(Timeout = 10_000)]
    public async Task Resuming_a_killed_sandbox_is_not_found()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;
        await h.Lifecycle.KillAsync(T, id, CancellationToken.None);

        var ex = await Assert.ThrowsAsync<SandboxException>(() => ResumeAsync(h, id));

        Assert.Equal(SandboxErrorKind.NotFound, ex.Kind);
        Assert.Equal(SandboxState.Killed, h.StateOf(id));
        Assert.Equal(0, h.InUse());
    }

    [Fact(Timeout = 10_000)]
    public async Task Another_tenants_sandbox_is_not_found()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;

        var ex = await Assert.ThrowsAsync<SandboxException>(() => h.Lifecycle.PauseAsync("t_other", id, new PauseSpec(), CancellationToken.None));
        var kill = await Assert.ThrowsAsync<SandboxException>(() => h.Lifecycle.KillAsync("t_other", id, CancellationToken.None));

        Assert.Equal(SandboxErrorKind.NotFound, ex.Kind);
        Assert.Equal(SandboxErrorKind.NotFound, kill.Kind);
        Assert.Equal(SandboxState.Running, h.StateOf(id));
    }

    [Fact(Timeout = 10_000)]
    public async Task Killing_a_paused_sandbox_marks_it_killed_and_cleans_its_driver_state()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync(LifecycleHarness.Spec(BoundaryKind.MicroVm))).Record.SandboxId;
        await PauseAsync(h, id);
        Assert.True(h.MicroVm.PausedStates[id]); // the microVM kept its memory

        await h.Lifecycle.KillAsync(T, id, CancellationToken.None);

        Assert.Equal(SandboxState.Killed, h.StateOf(id));
        Assert.Null(h.Store[id].AccessToken);
        Assert.Contains(id, h.MicroVm.Cleaned);
        Assert.False(h.MicroVm.PausedStates.ContainsKey(id));
        Assert.Single(h.AuditOf(id, AuditKinds.Kill));
        Assert.Equal(SandboxErrorKind.NotFound, (await Assert.ThrowsAsync<SandboxException>(() => ResumeAsync(h, id))).Kind);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_pause_asking_for_memory_on_a_boundary_that_keeps_only_files_pauses_its_files_and_says_so()
    {
        // E2B SDKs before 2.51 send memory: true on every pause; a process sandbox pauses its files and the audit says so.
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;

        await PauseAsync(h, id, new PauseSpec { KeepMemory = true });

        Assert.Equal(SandboxState.Paused, h.StateOf(id));
        Assert.Equal((id, false), Assert.Single(h.Process.Pauses));
        var pause = Assert.Single(h.AuditOf(id, AuditKinds.Pause));
        Assert.Contains("\"memoryKept\":false", pause.Data, StringComparison.Ordinal);
        Assert.Contains("memory asked for", pause.Data, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_requested_pause_that_fails_leaves_the_sandbox_running_with_its_quota()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;
        h.Process.PauseFails = new IOException("no space left on device");

        var ex = await Assert.ThrowsAsync<SandboxException>(() => PauseAsync(h, id));

        Assert.Equal(SandboxErrorKind.InsufficientStorage, ex.Kind);
        Assert.Equal(SandboxState.Running, h.StateOf(id));
        Assert.Equal(1, h.InUse());
        Assert.True(h.Lifecycle.TryGetServing(id, out _));
        Assert.Single(h.AuditOf(id, AuditKinds.PauseFailed));
    }

    [Fact(Timeout = 10_000)]
    public async Task A_container_paused_with_memory_is_frozen_in_place_keeping_quota_and_network_and_thaws_on_resume()
    {
        await using var h = new LifecycleHarness();
        var id = (await h.CreateAsync(LifecycleHarness.Spec(BoundaryKind.Container))).Record.SandboxId;
        var instance = (Fakes.FakeFreezableInstance)h.Container.Instances[id];

        await PauseAsync(h, id);

        Assert.True(instance.Frozen);
        Assert.Equal(SandboxState.Paused, h.StateOf(id));
        Assert.Empty(h.Container.Pauses); // not written to disk
        Assert.Equal(1, h.InUse());
        Assert.Equal(1, h.Network.Creates - h.Network.Deletes);
        Assert.False(h.Lifecycle.TryGetServing(id, out _));
        Assert.Equal(SandboxErrorKind.Conflict, (await Assert.ThrowsAsync<SandboxException>(() => PauseAsync(h, id))).Kind);

        var resumed = await ResumeAsync(h, id);

        Assert.True(resumed.Resumed);
        Assert.False(instance.Frozen);
        Assert.Equal(SandboxState.Running, h.StateOf(id));
        Assert.True(h.Lifecycle.TryGetServing(id, out _));
        Assert.Empty(h.Container.Resumes);
    }

    [Fact(Timeout = 10_000)]
    public async Task Resuming_a_running_sandbox_returns_it_as_it_is()
    {
        await using var h = new LifecycleHarness();
        var created = await h.CreateAsync();

        var connected = await ResumeAsync(h, created.Record.SandboxId);

        Assert.False(connected.Resumed);
        Assert.Equal(created.AccessToken, connected.AccessToken);
        Assert.Empty(h.Process.Resumes);
    }
}
