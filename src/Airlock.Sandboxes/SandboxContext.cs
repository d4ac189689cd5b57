using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Sandboxes.Agent;
using Airlock.Sandboxes.Live;
using Airlock.Sandboxes.Policy;
using Microsoft.Extensions.Logging;

namespace Airlock.Sandboxes;

/// <summary>What every lifecycle collaborator works with; one instance per node.</summary>
internal sealed class SandboxContext(
    IStore store,
    IAuditLog audit,
    IReadOnlyDictionary<BoundaryKind, ISandboxDriver> drivers,
    INetworkManager network,
    SandboxConnector connector,
    ISandboxPolicy policy,
    ActivityTracker activity,
    TimeProvider time,
    SandboxOptions options,
    string guestAgentPath,
    ILogger logger)
{
    public IStore Store { get; } = store;
    public IAuditLog Audit { get; } = audit;
    public IReadOnlyDictionary<BoundaryKind, ISandboxDriver> Drivers { get; } = drivers;
    public INetworkManager Network { get; } = network;
    public SandboxConnector Connector { get; } = connector;
    public ISandboxPolicy Policy { get; } = policy;
    public ActivityTracker Activity { get; } = activity;
    public TimeProvider Time { get; } = time;
    public SandboxOptions Options { get; } = options;
    public ILogger Logger { get; } = logger;
    public SandboxRegistry Registry { get; } = new();
    public AgentChannel Agent { get; } = new(connector, time, options);
    public CancellationTokenSource Stopping { get; } = new();

    public DateTimeOffset Now => Time.GetUtcNow();

    public IPausableDriver? Pausable(BoundaryKind boundary) => Drivers.GetValueOrDefault(boundary) as IPausableDriver;

    public Task AuditAsync(string kind, SandboxRecord record, string data, CancellationToken cancellationToken) =>
        Audit.AppendAsync(new AuditEntry(kind, record.TenantId, record.SandboxId, data), cancellationToken);

    /// <summary>The one place a <see cref="SandboxLaunch"/> is built: create, resume and re-adoption differ only in these arguments.</summary>
    public SandboxLaunch Launch(SandboxRecord record, string token, SandboxNetwork network, string rootFs = "", bool? keepOnShutdown = null, bool coldBoot = false) => new()
    {
        SandboxId = record.SandboxId,
        TemplateId = record.TemplateId,
        RootFs = rootFs,
        StateDir = Options.StateDir(record.SandboxId),
        AccessToken = token,
        Limits = record.Limits,
        Network = network,
        EnvVars = record.EnvVars,
        GuestAgentPath = guestAgentPath,
        KeepOnShutdown = keepOnShutdown ?? Options.KeepSandboxesOnShutdown,
        Hostname = "sandbox",
        ColdBoot = coldBoot,
    };

    /// <summary>A record for this tenant, or a clear not-found.</summary>
    public async Task<SandboxRecord> GetAsync(string tenantId, string sandboxId, CancellationToken cancellationToken)
    {
        var record = SandboxIds.Valid(sandboxId) ? await Store.GetSandboxAsync(tenantId, sandboxId, cancellationToken) : null;
        return record ?? throw SandboxException.NotFound("sandbox_not_found", $"Sandbox {sandboxId} not found.");
    }

    /// <summary>A sandbox that must be running; a killed or failed one is a clear not-found, a frozen one a conflict.</summary>
    public async Task<LiveSandbox> GetLiveAsync(string tenantId, string sandboxId, CancellationToken cancellationToken)
    {
        var record = await GetAsync(tenantId, sandboxId, cancellationToken);
        if (Registry.TryGet(record.SandboxId, out var live) && !live.Ending)
        {
            return live.Frozen ? throw SandboxException.Conflict("sandbox_paused", $"Sandbox {sandboxId} is paused; resume it first.") : live;
        }

        throw SandboxException.NotFound("sandbox_not_running", record.State.IsTerminal()
            ? $"Sandbox {sandboxId} is {record.State.ToString().ToLowerInvariant()}{(record.FailureReason is null ? "" : $" ({record.FailureReason})")}."
            : $"Sandbox {sandboxId} is {record.State.ToString().ToLowerInvariant()}.");
    }
}
