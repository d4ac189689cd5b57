using System.Net.Sockets;
using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests;

/// <summary>Agent health checks under a <see cref="Microsoft.Extensions.Time.Testing.FakeTimeProvider"/>: misses, unresponsive, recovery, kill.</summary>
public sealed class HealthTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);

    private static LifecycleHarness NewHarness() => new(o => o with { HealthInterval = Interval, HealthMisses = 3, HealthTimeout = TimeSpan.FromSeconds(2) });

    /// <summary>One health round on the fake clock, then real time for its probes to finish (a round due while one runs is skipped).</summary>
    private static async Task RoundsAsync(LifecycleHarness h, int rounds)
    {
        for (var i = 0; i < rounds; i++)
        {
            h.Time.Advance(Interval);
            await Task.Delay(200);
        }
    }

    private static void AgentStopsAnswering(LifecycleHarness h) => h.Network.ConnectFails = new SocketException((int)SocketError.ConnectionRefused);

    [Fact(Timeout = 15_000)]
    public async Task Three_missed_health_checks_mark_a_sandbox_unresponsive_with_the_reason_and_an_answer_marks_it_running_again()
    {
        await using var h = NewHarness();
        h.Lifecycle.StartBackground();
        var id = (await h.CreateAsync()).Record.SandboxId;
        await RoundsAsync(h, 1);
        await LifecycleHarness.EventuallyAsync(() => h.Agent.Requests.Contains("GET /health"), "a first health check reached the agent");

        AgentStopsAnswering(h);
        await RoundsAsync(h, 2);
        Assert.Equal(SandboxState.Running, h.StateOf(id)); // two misses are not yet three

        await RoundsAsync(h, 1);
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Unresponsive, "unresponsive after the third miss");
        Assert.Contains("missed 3 health checks", h.Store[id].FailureReason, StringComparison.Ordinal);
        Assert.Contains("missed 3 health checks", Assert.Single(h.AuditOf(id, AuditKinds.Unresponsive)).Data, StringComparison.Ordinal);
        var listed = await h.Lifecycle.ListAsync(LifecycleHarness.Tenant, [SandboxState.Running], new Dictionary<string, string>(), CancellationToken.None);
        Assert.Equal(SandboxState.Unresponsive, Assert.Single(listed).State); // asked for running, told the truth
        Assert.Equal(1, h.InUse()); // still holds its quota

        await RoundsAsync(h, 2);
        Assert.Single(h.AuditOf(id, AuditKinds.Unresponsive)); // marked once, not once per miss

        h.Network.ConnectFails = null;
        await RoundsAsync(h, 1);
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Running, "running again once the agent answers");
        Assert.Null(h.Store[id].FailureReason);
        Assert.Single(h.AuditOf(id, AuditKinds.Responsive));
    }

    [Fact(Timeout = 15_000)]
    public async Task An_unresponsive_sandbox_can_be_killed_and_then_frees_its_quota_and_network()
    {
        await using var h = NewHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;
        AgentStopsAnswering(h);
        for (var i = 0; i < 3; i++)
        {
            await h.Lifecycle.CheckHealthAsync(CancellationToken.None);
        }

        Assert.Equal(SandboxState.Unresponsive, h.StateOf(id));

        await h.Lifecycle.KillAsync(LifecycleHarness.Tenant, id, CancellationToken.None);

        Assert.Equal(SandboxState.Killed, h.StateOf(id));
        Assert.True(h.Process.Instances[id].Killed);
        Assert.Equal(0, h.InUse());
        Assert.Equal(h.Network.Creates, h.Network.Deletes);
        Assert.Single(h.AuditOf(id, AuditKinds.Kill));
    }

    [Fact(Timeout = 15_000)]
    public async Task The_timeout_still_ends_an_unresponsive_sandbox()
    {
        await using var h = NewHarness();
        h.Lifecycle.StartBackground();
        var id = (await h.CreateAsync(LifecycleHarness.Spec() with { TimeoutSeconds = 60 })).Record.SandboxId;
        AgentStopsAnswering(h);
        await RoundsAsync(h, 4);
        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Unresponsive, "unresponsive");

        await RoundsAsync(h, 2);

        await LifecycleHarness.EventuallyAsync(() => h.StateOf(id) == SandboxState.Killed, "killed at its timeout");
        Assert.Single(h.AuditOf(id, AuditKinds.Timeout));
        Assert.Equal(0, h.InUse());
    }

    [Fact(Timeout = 15_000)]
    public async Task A_sandbox_whose_agent_answers_is_never_marked()
    {
        await using var h = NewHarness();
        var id = (await h.CreateAsync()).Record.SandboxId;

        for (var i = 0; i < 5; i++)
        {
            await h.Lifecycle.CheckHealthAsync(CancellationToken.None);
        }

        Assert.Equal(SandboxState.Running, h.StateOf(id));
        Assert.Empty(h.AuditOf(id, AuditKinds.Unresponsive));
        Assert.True(h.Agent.Requests.Count(r => r == "GET /health") >= 5);
    }
}
