using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Agent;
using Airlock.Sandboxes.Live;
using Airlock.Sandboxes.Tests.Fakes;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Airlock.Sandboxes.Tests;

/// <summary>
/// A <see cref="SandboxLifecycle"/> over fakes: an in-memory store and audit, a fake network whose connections reach
/// one loopback agent, a driver per boundary (process: files only; container: freezable, files only to disk; microvm:
/// keeps memory), and a <see cref="FakeTimeProvider"/>. No root, no processes.
/// </summary>
internal sealed class LifecycleHarness : IAsyncDisposable
{
    public const string Tenant = "t_1";

    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("airlock-lifecycle-");
    private readonly SandboxConnector _connector;

    public LifecycleHarness(Func<SandboxOptions, SandboxOptions>? configure = null)
    {
        Store = new InMemoryStore();
        Audit = new ListAuditLog(Store, Time);
        Network = new FakeNetwork(Agent);
        _connector = new SandboxConnector(Network);
        var options = new SandboxOptions { DataDir = _dir.FullName, NodeId = "node-a" };
        Options = configure is null ? options : configure(options);
        Lifecycle = new SandboxLifecycle(
            Store, Audit, [Process, Container, MicroVm], Network, _connector, new FakeTemplates(Path.Combine(_dir.FullName, "rootfs")),
            new ActivityTracker(), Time, Options, "/nonexistent/airlock-guest", NullLoggerFactory.Instance);
    }

    public FakeTimeProvider Time { get; } = new(new DateTimeOffset(2025, 6, 1, 12, 0, 0, TimeSpan.Zero));

    public InMemoryStore Store { get; }

    public ListAuditLog Audit { get; }

    public FakeAgent Agent { get; } = new();

    public FakeNetwork Network { get; }

    public FakePausableDriver Process { get; } = new(BoundaryKind.Process, canKeepMemory: false);

    public FakePausableDriver Container { get; } = new(BoundaryKind.Container, canKeepMemory: false);

    public FakePausableDriver MicroVm { get; } = new(BoundaryKind.MicroVm, canKeepMemory: true);

    public SandboxOptions Options { get; }

    public SandboxLifecycle Lifecycle { get; }

    public static SandboxSpec Spec(BoundaryKind boundary = BoundaryKind.Process, string tenant = Tenant) => new() { TenantId = tenant, Boundary = boundary };

    public Task<SandboxHandle> CreateAsync(SandboxSpec? spec = null) => Lifecycle.CreateAsync(spec ?? Spec(), CancellationToken.None);

    public SandboxState StateOf(string sandboxId) => Store[sandboxId].State;

    public IReadOnlyList<AuditRecord> AuditOf(string sandboxId, string kind) =>
        Store.Audit.Where(a => a.SandboxId == sandboxId && a.Kind == kind).ToList();

    public int InUse(string tenant = Tenant) => Lifecycle.Quota.InUse(tenant).Count;

    /// <summary>A record as an earlier airlockd (or another node) left it in the store.</summary>
    public SandboxRecord Seeded(SandboxState state, BoundaryKind boundary = BoundaryKind.Process, string? nodeId = null, bool withNetwork = true)
    {
        var id = SandboxIds.New();
        var token = AccessTokens.New();
        var now = Time.GetUtcNow();
        return new SandboxRecord
        {
            SandboxId = id,
            TenantId = Tenant,
            TemplateId = "base",
            Boundary = boundary,
            State = state,
            CreatedAt = now.AddMinutes(-5),
            EndAt = now.AddMinutes(5),
            AccessTokenHash = AccessTokens.Hash(token),
            AccessToken = token,
            Network = withNetwork ? new SandboxNetwork { Namespace = $"airlock-{id}", HostInterface = "al99", HostAddress = "10.254.0.1", SandboxAddress = "10.254.0.2" } : null,
            Report = new BoundaryReport { Boundary = boundary.Name(), Driver = "fake", Kernel = "fake", Limits = new SandboxLimits(), Network = "deny-all" },
            PausedAt = state == SandboxState.Paused ? now.AddMinutes(-1) : null,
            NodeId = nodeId ?? Options.NodeId,
        };
    }

    /// <summary>Moves the fake clock in small steps, giving the lifecycle's continuations real time to run between them.</summary>
    public async Task AdvanceAsync(TimeSpan by, TimeSpan? step = null)
    {
        var each = step ?? by;
        for (var moved = TimeSpan.Zero; moved < by; moved += each)
        {
            Time.Advance(each < by - moved ? each : by - moved);
            await Task.Delay(1);
        }
    }

    /// <summary>Waits (real time, bounded) until <paramref name="condition"/> holds.</summary>
    public static async Task EventuallyAsync(Func<bool> condition, string what, int milliseconds = 5_000)
    {
        var until = DateTime.UtcNow.AddMilliseconds(milliseconds);
        while (!condition())
        {
            if (DateTime.UtcNow > until)
            {
                Assert.Fail($"timed out waiting for: {what}");
            }

            await Task.Delay(5);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Lifecycle.DisposeAsync();
        _connector.Dispose();
        await Agent.DisposeAsync();
        try
        {
            _dir.Delete(recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }
}
