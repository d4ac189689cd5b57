using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests;

public sealed class NodeIdTests
{
    [Fact(Timeout = 10_000)]
    public async Task Every_sandbox_record_created_names_the_node_that_runs_it()
    {
        await using var h = new LifecycleHarness(o => o with { NodeId = "node-7" });
        var created = new List<SandboxHandle>();
        foreach (var boundary in new[] { BoundaryKind.Process, BoundaryKind.Container, BoundaryKind.MicroVm })
        {
            created.Add(await h.CreateAsync(LifecycleHarness.Spec(boundary)));
        }

        h.Process.StartExited = true; // a failed create is stored too, and must name the node as well
        await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync());

        Assert.Equal(4, h.Store.Sandboxes.Count);
        Assert.All(h.Store.Sandboxes, r => Assert.Equal("node-7", r.NodeId));
        Assert.All(created, c => Assert.Equal("node-7", c.Record.NodeId));
        var creates = h.Store.Audit.Where(a => a.Kind == AuditKinds.SandboxCreate).ToList();
        Assert.Equal(4, creates.Count);
        Assert.All(creates, a => Assert.Contains("\"node\":\"node-7\"", a.Data, StringComparison.Ordinal));
    }

    [Fact(Timeout = 10_000)]
    public async Task A_resumed_sandbox_still_names_its_node()
    {
        await using var h = new LifecycleHarness(o => o with { NodeId = "node-7" });
        var sandbox = await h.CreateAsync();
        await h.Lifecycle.PauseAsync(LifecycleHarness.Tenant, sandbox.Record.SandboxId, new PauseSpec(), CancellationToken.None);
        var resumed = await h.Lifecycle.ResumeAsync(LifecycleHarness.Tenant, sandbox.Record.SandboxId, new ResumeSpec(), CancellationToken.None);

        Assert.True(resumed.Resumed);
        Assert.Equal("node-7", resumed.Record.NodeId);
        Assert.Equal("node-7", h.Store[sandbox.Record.SandboxId].NodeId);
    }
}
