using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests;

/// <summary>The default policy, through create: refusals happen before anything is stored, reserved or started.</summary>
public sealed class PolicyTests
{
    private static async Task<SandboxException> RefusedAsync(LifecycleHarness h, SandboxSpec spec)
    {
        var ex = await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync(spec));
        Assert.Empty(h.Store.Sandboxes);
        Assert.Equal(0, h.InUse());
        Assert.Equal(0, h.Network.Creates);
        Assert.Equal(0, h.Process.Starts + h.Container.Starts + h.MicroVm.Starts);
        return ex;
    }

    [Fact(Timeout = 10_000)]
    public async Task AutoResume_without_onTimeout_pause_is_an_invalid_argument()
    {
        await using var h = new LifecycleHarness();

        var ex = await RefusedAsync(h, LifecycleHarness.Spec() with { AutoResume = true });

        Assert.Equal((SandboxErrorKind.InvalidArgument, "invalid_lifecycle"), (ex.Kind, ex.Code));
    }

    [Fact(Timeout = 10_000)]
    public async Task AutoResume_with_onTimeout_pause_is_admitted_and_stored()
    {
        await using var h = new LifecycleHarness();

        var sandbox = await h.CreateAsync(LifecycleHarness.Spec() with { AutoResume = true, OnTimeout = TimeoutAction.Pause });

        Assert.Equal(new LifecycleSettings { OnTimeout = TimeoutAction.Pause, AutoResume = true, KeepMemory = false }, h.Store[sandbox.Record.SandboxId].Lifecycle);
    }

    [Fact(Timeout = 10_000)]
    public async Task KeepMemory_on_a_boundary_that_cannot_keep_memory_is_unavailable()
    {
        await using var h = new LifecycleHarness();

        var ex = await RefusedAsync(h, LifecycleHarness.Spec(BoundaryKind.Process) with { KeepMemory = true, OnTimeout = TimeoutAction.Pause });

        Assert.Equal((SandboxErrorKind.Unavailable, "memory_not_kept"), (ex.Kind, ex.Code));
    }

    [Fact(Timeout = 10_000)]
    public async Task High_risk_on_the_process_boundary_without_allowDowngrade_is_an_invalid_argument()
    {
        await using var h = new LifecycleHarness();

        var ex = await RefusedAsync(h, LifecycleHarness.Spec(BoundaryKind.Process) with { Risk = Risk.High });

        Assert.Equal((SandboxErrorKind.InvalidArgument, "boundary_too_weak"), (ex.Kind, ex.Code));
    }

    [Fact(Timeout = 10_000)]
    public async Task High_risk_on_the_process_boundary_with_allowDowngrade_gets_it_and_the_report_says_so()
    {
        await using var h = new LifecycleHarness();

        var sandbox = await h.CreateAsync(LifecycleHarness.Spec(BoundaryKind.Process) with { Risk = Risk.High, AllowDowngrade = true });

        Assert.Equal(BoundaryKind.Process, sandbox.Record.Boundary);
        Assert.Contains("consented", sandbox.Record.Report!.Downgrade, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task An_unavailable_boundary_with_allowDowngrade_gets_the_next_weaker_one_with_the_downgrade_recorded()
    {
        await using var h = new LifecycleHarness();
        h.MicroVm.Available = false;

        var sandbox = await h.CreateAsync(new SandboxSpec { TenantId = LifecycleHarness.Tenant, Risk = Risk.High, AllowDowngrade = true });

        Assert.Equal(BoundaryKind.Container, sandbox.Record.Boundary);
        Assert.Equal(0, h.MicroVm.Starts);
        var stored = h.Store[sandbox.Record.SandboxId];
        Assert.Equal("container", stored.Report!.Boundary);
        Assert.Contains("microvm unavailable", stored.Report.Downgrade, StringComparison.Ordinal);
        Assert.Contains("container", stored.Report.Downgrade, StringComparison.Ordinal);
        Assert.DoesNotContain("\"downgrade\":null", Assert.Single(h.AuditOf(stored.SandboxId, AuditKinds.SandboxCreate)).Data, StringComparison.Ordinal);
    }

    [Fact(Timeout = 10_000)]
    public async Task An_unavailable_boundary_without_allowDowngrade_is_unavailable_never_silently_weaker()
    {
        await using var h = new LifecycleHarness();
        h.MicroVm.Available = false;

        var ex = await RefusedAsync(h, new SandboxSpec { TenantId = LifecycleHarness.Tenant, Risk = Risk.High });

        Assert.Equal((SandboxErrorKind.Unavailable, "boundary_unavailable"), (ex.Kind, ex.Code));
    }

    [Fact(Timeout = 10_000)]
    public async Task A_boundary_without_a_downgrade_has_no_downgrade_in_its_report()
    {
        await using var h = new LifecycleHarness();

        var sandbox = await h.CreateAsync(new SandboxSpec { TenantId = LifecycleHarness.Tenant, Risk = Risk.High });

        Assert.Equal(BoundaryKind.MicroVm, sandbox.Record.Boundary);
        Assert.Null(sandbox.Record.Report!.Downgrade);
    }

    [Theory(Timeout = 10_000)]
    [InlineData(EgressDefault.Deny, "pypi.org")]
    [InlineData(EgressDefault.Allow, null)]
    public async Task A_network_policy_other_than_deny_all_is_unavailable(EgressDefault egress, string? allowed)
    {
        await using var h = new LifecycleHarness();
        var network = new NetworkPolicy { Default = egress, Allow = allowed is null ? [] : [new EgressRule(allowed)] };

        var ex = await RefusedAsync(h, LifecycleHarness.Spec() with { Network = network });

        Assert.Equal((SandboxErrorKind.Unavailable, "egress_unavailable"), (ex.Kind, ex.Code));
    }

    [Fact(Timeout = 10_000)]
    public async Task The_deny_all_network_policy_is_admitted_and_stored()
    {
        await using var h = new LifecycleHarness();

        var sandbox = await h.CreateAsync(LifecycleHarness.Spec() with { Network = NetworkPolicy.DenyAll, AllowInternetAccess = true });

        Assert.True(h.Store[sandbox.Record.SandboxId].NetworkPolicy.IsDenyAll);
    }

    [Theory(Timeout = 10_000)]
    [InlineData("MY VAR")]
    [InlineData("A\nB")]
    [InlineData("TAB\tBED")]
    [InlineData("X=Y")]
    [InlineData("")]
    [InlineData("AIRLOCK_TOKEN")]
    public async Task An_env_name_with_whitespace_a_newline_or_an_equals_sign_is_an_invalid_argument(string name)
    {
        await using var h = new LifecycleHarness();

        var ex = await RefusedAsync(h, LifecycleHarness.Spec() with { Env = new Dictionary<string, string> { [name] = "1" } });

        Assert.Equal((SandboxErrorKind.InvalidArgument, "invalid_env"), (ex.Kind, ex.Code));
    }

    [Fact(Timeout = 10_000)]
    public async Task Plain_env_names_reach_the_driver()
    {
        await using var h = new LifecycleHarness();

        var sandbox = await h.CreateAsync(LifecycleHarness.Spec() with { Env = new Dictionary<string, string> { ["PATH_EXTRA"] = "/opt/x y", ["lower_case"] = "a=b" } });

        Assert.Equal("a=b", h.Process.Launches[sandbox.Record.SandboxId].EnvVars["lower_case"]);
    }

    [Theory(Timeout = 10_000)]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(86_401)]
    public async Task A_timeout_out_of_range_is_an_invalid_argument(int seconds)
    {
        await using var h = new LifecycleHarness();

        var ex = await RefusedAsync(h, LifecycleHarness.Spec() with { TimeoutSeconds = seconds });

        Assert.Equal((SandboxErrorKind.InvalidArgument, "invalid_timeout"), (ex.Kind, ex.Code));
    }

    [Fact(Timeout = 10_000)]
    public async Task An_unknown_template_is_not_found()
    {
        await using var h = new LifecycleHarness();

        var ex = await RefusedAsync(h, LifecycleHarness.Spec() with { TemplateId = "nope" });

        Assert.Equal((SandboxErrorKind.NotFound, "template_not_found"), (ex.Kind, ex.Code));
    }
}
