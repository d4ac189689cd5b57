using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests;

/// <summary>Admission reserves the tenant's quota atomically, before anything starts, and gives it back on every failure.</summary>
public sealed class QuotaTests
{
    /// <summary>
    /// Runs <paramref name="attempts"/> creates at once while every driver start is held, so the winners are still
    /// starting (not yet running) when the losers are refused: a check against running sandboxes would admit them all.
    /// </summary>
    private static async Task<(List<SandboxHandle> Started, List<SandboxException> Refused)> RaceAsync(LifecycleHarness h, SandboxSpec spec, int attempts, int expected)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Process.OnStart = (_, ct) => release.Task.WaitAsync(ct);
        var creates = Enumerable.Range(0, attempts).Select(_ => Task.Run(() => h.CreateAsync(spec))).ToList();

        await LifecycleHarness.EventuallyAsync(() => creates.Count(t => t.IsFaulted) == attempts - expected && h.Process.Starts == expected, $"{attempts - expected} refusals while {expected} start");
        Assert.Equal(expected, h.Process.Starts);
        release.SetResult();
        h.Process.OnStart = null;

        var started = new List<SandboxHandle>();
        var refused = new List<SandboxException>();
        foreach (var create in creates)
        {
            try
            {
                started.Add(await create);
            }
            catch (SandboxException ex)
            {
                refused.Add(ex);
            }
        }

        return (started, refused);
    }

    [Fact(Timeout = 20_000)]
    public async Task Twenty_concurrent_creates_against_a_quota_of_five_start_exactly_five()
    {
        await using var h = new LifecycleHarness(o => o with { MaxSandboxesPerTenant = 5 });

        var (started, refused) = await RaceAsync(h, LifecycleHarness.Spec(), attempts: 20, expected: 5);

        Assert.Equal(5, started.Count);
        Assert.Equal(15, refused.Count);
        Assert.All(refused, e => Assert.Equal(SandboxErrorKind.QuotaExceeded, e.Kind));
        Assert.All(refused, e => Assert.Equal("quota_exceeded", e.Code));
        Assert.Equal(5, h.InUse());
        Assert.Equal(5, h.Store.Sandboxes.Count(r => r.State == SandboxState.Running));
        Assert.Equal(5, h.Store.Sandboxes.Count); // a refused create leaves no record
    }

    [Fact(Timeout = 20_000)]
    public async Task After_one_of_five_is_killed_exactly_one_more_create_succeeds()
    {
        await using var h = new LifecycleHarness(o => o with { MaxSandboxesPerTenant = 5 });
        var (started, _) = await RaceAsync(h, LifecycleHarness.Spec(), attempts: 20, expected: 5);

        await h.Lifecycle.KillAsync(LifecycleHarness.Tenant, started[0].Record.SandboxId, CancellationToken.None);
        Assert.Equal(4, h.InUse());
        var again = await h.CreateAsync();
        var refused = await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync());

        Assert.Equal(SandboxState.Running, again.Record.State);
        Assert.Equal(SandboxErrorKind.QuotaExceeded, refused.Kind);
        Assert.Equal(5, h.InUse());
    }

    [Fact(Timeout = 20_000)]
    public async Task Twelve_concurrent_creates_of_two_vcpus_against_eight_vcpus_start_exactly_four()
    {
        await using var h = new LifecycleHarness(o => o with { MaxTenantVCpus = 8, MaxCpuCount = 2 });

        var (started, refused) = await RaceAsync(h, LifecycleHarness.Spec() with { CpuCount = 2 }, attempts: 12, expected: 4);

        Assert.Equal(4, started.Count);
        Assert.Equal(8, refused.Count);
        Assert.All(refused, e => Assert.Equal((SandboxErrorKind.QuotaExceeded, "cpu_quota_exceeded"), (e.Kind, e.Code)));
        Assert.Equal((4, 8), (h.Lifecycle.Quota.InUse(LifecycleHarness.Tenant).Count, h.Lifecycle.Quota.InUse(LifecycleHarness.Tenant).VCpus));
    }

    [Fact(Timeout = 20_000)]
    public async Task Ten_concurrent_creates_of_512_MiB_against_2_GiB_start_exactly_four()
    {
        await using var h = new LifecycleHarness(o => o with { MaxTenantMemoryMiB = 2048 });

        var (started, refused) = await RaceAsync(h, LifecycleHarness.Spec() with { MemoryMiB = 512 }, attempts: 10, expected: 4);

        Assert.Equal(4, started.Count);
        Assert.All(refused, e => Assert.Equal((SandboxErrorKind.QuotaExceeded, "memory_quota_exceeded"), (e.Kind, e.Code)));
        Assert.Equal(2048, h.Lifecycle.Quota.InUse(LifecycleHarness.Tenant).MemoryMiB);
    }

    [Fact(Timeout = 10_000)]
    public async Task Quota_is_per_tenant()
    {
        await using var h = new LifecycleHarness(o => o with { MaxSandboxesPerTenant = 1 });
        await h.CreateAsync();

        var other = await h.CreateAsync(LifecycleHarness.Spec(tenant: "t_2"));

        Assert.Equal(SandboxState.Running, other.Record.State);
        await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync());
    }

    [Fact(Timeout = 10_000)]
    public async Task A_driver_start_that_throws_releases_its_reservation_and_everything_it_made()
    {
        await using var h = new LifecycleHarness(o => o with { MaxSandboxesPerTenant = 1 });
        h.Process.OnStart = (_, _) => throw new InvalidOperationException("runtime exploded");

        var ex = await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync());

        Assert.Equal((SandboxErrorKind.Internal, "sandbox_start_failed"), (ex.Kind, ex.Code));
        Assert.Equal(0, h.InUse());
        var failed = Assert.Single(h.Store.Sandboxes);
        Assert.Equal(SandboxState.Failed, failed.State);
        Assert.Null(failed.AccessToken);
        Assert.Single(h.AuditOf(failed.SandboxId, AuditKinds.Failed));
        Assert.Equal(h.Network.Creates, h.Network.Deletes);
        Assert.Contains(failed.SandboxId, h.Process.Cleaned);

        h.Process.OnStart = null;
        var next = await h.CreateAsync();
        Assert.Equal(SandboxState.Running, next.Record.State);
    }

    [Fact(Timeout = 10_000)]
    public async Task An_entry_process_that_exits_before_its_agent_answers_releases_the_reservation()
    {
        await using var h = new LifecycleHarness(o => o with { MaxSandboxesPerTenant = 1 });
        h.Process.StartExited = true;

        var ex = await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync());

        Assert.Contains("exited before the agent was ready", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, h.InUse());
        var failed = Assert.Single(h.Store.Sandboxes);
        Assert.Equal(SandboxState.Failed, failed.State);
        Assert.True(h.Process.Instances[failed.SandboxId].Killed);
        Assert.True(h.Process.Instances[failed.SandboxId].Disposed);
        Assert.Equal(h.Network.Creates, h.Network.Deletes);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_create_whose_first_audit_record_cannot_be_written_releases_its_reservation()
    {
        await using var h = new LifecycleHarness(o => o with { MaxSandboxesPerTenant = 1 });
        h.Audit.FailKind = AuditKinds.SandboxCreate;

        await Assert.ThrowsAnyAsync<Exception>(() => h.CreateAsync());

        Assert.Equal(0, h.InUse());
        Assert.DoesNotContain(h.Store.Sandboxes, r => r.State == SandboxState.Creating);
        h.Audit.FailKind = null;
        var next = await h.CreateAsync();
        Assert.Equal(SandboxState.Running, next.Record.State);
    }

    [Fact(Timeout = 10_000)]
    public Task A_tenants_own_quotas_override_the_server_defaults_field_by_field_and_only_for_that_tenant()
    {
        var ledger = new Policy.QuotaLedger(maxSandboxes: 3, maxMemoryMiB: 4096, maxVCpus: 8);
        var small = new SandboxLimits { MemoryMiB = 512, VCpus = 1 };
        ledger.SetTenantQuotas("t_tiny", new Core.Storage.TenantQuotas { MaxSandboxes = 1 });
        Assert.Equal((1, 4096, 8), ledger.LimitsOf("t_tiny"));
        Assert.Equal((3, 4096, 8), ledger.LimitsOf("t_other"));

        using var first = ledger.Reserve("t_tiny", "a", small);
        var refused = Assert.Throws<SandboxException>(() => ledger.Reserve("t_tiny", "b", small));
        Assert.Equal(SandboxErrorKind.QuotaExceeded, refused.Kind);
        Assert.Contains("limit 1", refused.Message);
        using var other = ledger.Reserve("t_other", "c", small);
        using var another = ledger.Reserve("t_other", "d", small);

        ledger.SetTenantQuotas("t_tiny", null);
        using var second = ledger.Reserve("t_tiny", "b", small);
        Assert.Equal(2, ledger.InUse("t_tiny").Count);
        return Task.CompletedTask;
    }
}
